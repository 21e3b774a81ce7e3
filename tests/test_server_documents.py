"""POST / DELETE /v1/documents on a real uvicorn server over a copy of the small index:
off by default, behind the API key, each update one generation that the next search
sees, while searches running across the update all succeed."""

from __future__ import annotations

import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from retrievers.live_searcher import LiveSearcher
from searchagent.server.app import create_app
from tests.test_server import LiveServer, server_config

KEY = {"X-API-Key": "s3cret"}
NEW = {"id": "new-1", "title": "Quokka marmalade",
       "text": "The Zanzibar quokka festival serves marmalade to juggling quokkas at dawn."}


def dead_backend(**server):
    """The config of a server whose generator backend does not answer (no model load:
    these routes never generate)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    return server_config(**server).updated({"generator": {
        "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 0,
        "timeout_s": 5.0}}, "test")


@pytest.fixture
def served(small_index, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(small_index, copy)
    config = dead_backend(api_key="s3cret", allow_updates=True, max_body_bytes=65536)
    searcher = LiveSearcher(copy, config)
    server = LiveServer(create_app(searcher, config, use_agent=False, warm_up=False))
    yield server
    server.close()
    searcher.close()


def ids_for(server, query: str, mode: str = "hybrid") -> list[str]:
    reply = server.client.post("/v1/search", json={"query": query, "k": 5, "mode": mode},
                               headers=KEY)
    assert reply.status_code == 200, reply.text
    return [hit["id"] for hit in reply.json()["hits"]]


def test_updates_are_off_by_default(searcher):
    server = LiveServer(create_app(searcher, dead_backend(), use_agent=False, warm_up=False))
    try:
        reply = server.client.post("/v1/documents", json={"documents": [NEW]})
        assert reply.status_code == 403 and "--allow-updates" in reply.json()["error"]
        assert server.client.request("DELETE", "/v1/documents",
                                     json={"ids": ["x"]}).status_code == 403
    finally:
        server.close()


def test_upsert_and_delete_commit_generations_the_next_search_sees(served):
    client = served.client
    assert client.post("/v1/documents", json={"documents": [NEW]}).status_code == 401
    assert "new-1" not in ids_for(served, "Zanzibar quokka marmalade")

    def search_many(n: int) -> list[int]:
        return [client.post("/v1/search", json={"query": f"history of music {i}", "k": 3},
                            headers=KEY).status_code for i in range(n)]

    with ThreadPoolExecutor(2) as pool:          # searches keep running across the update
        running = pool.submit(search_many, 15)
        added = client.post("/v1/documents", json={"documents": [NEW]}, headers=KEY)
        assert running.result() == [200] * 15
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["generation"] == 1 and body["inserted"] == 1 and body["passages"] == 401
    assert ids_for(served, "Zanzibar quokka marmalade", "bm25")[0] == "new-1"
    assert ids_for(served, "Zanzibar quokka marmalade", "dense")[0] == "new-1"

    replaced = client.post("/v1/documents", headers=KEY, json={"documents": [
        {"id": "new-1", "text": "Penguins of the Kerguelen islands collect shiny pebbles."}]})
    assert replaced.json()["replaced"] == 1 and replaced.json()["passages"] == 401
    assert ids_for(served, "Kerguelen penguins pebbles", "bm25")[0] == "new-1"
    assert "new-1" not in ids_for(served, "Zanzibar quokka marmalade", "bm25")

    gone = client.request("DELETE", "/v1/documents", headers=KEY,
                          json={"ids": ["new-1", "never-there"]})
    assert gone.status_code == 200
    assert gone.json()["generation"] == 3 and gone.json()["missing_ids"] == ["never-there"]
    assert "new-1" not in ids_for(served, "Kerguelen penguins pebbles")
    metrics = client.get("/metrics", headers=KEY).text
    assert re.search(r"searchagent_index_generation 3(\.0)?\b", metrics)
    assert re.search(r"searchagent_index_live_passages 400(\.0)?\b", metrics)
    assert re.search(r"searchagent_index_deleted_passages 2(\.0)?\b", metrics)


def test_bad_documents_are_422_and_change_nothing(served):
    client = served.client
    twice = client.post("/v1/documents", headers=KEY, json={"documents": [NEW, NEW]})
    assert twice.status_code == 422 and "duplicate id 'new-1'" in twice.json()["error"]
    assert twice.json()["detail"][0]["field"] == "body.documents.1.id"     # was "id"
    blank = client.post("/v1/documents", headers=KEY,
                        json={"documents": [{"id": "b", "text": "   "}]})
    assert blank.status_code == 422 and blank.json()["detail"][0]["field"].endswith("text")
    assert client.post("/v1/documents", headers=KEY, json={"documents": []}).status_code == 422
    metrics = client.get("/metrics", headers=KEY).text
    assert re.search(r"searchagent_index_generation 0(\.0)?\b", metrics)


def test_answers_retrieve_from_the_generation_current_at_each_request(small_index, tmp_path):
    from searchagent.generators.factory import make_generator

    copy = tmp_path / "index"
    shutil.copytree(small_index, copy)
    config = server_config(api_key="s3cret", allow_updates=True, max_body_bytes=65536)
    searcher = LiveSearcher(copy, config)
    server = LiveServer(create_app(searcher, config, generator=make_generator(config.generator),
                                   warm_up=False))
    question = {"question": "Where do the Zanzibar quokkas juggle marmalade?", "k": 2,
                "max_hops": 2}

    def cited(strategy: str) -> list[str]:
        reply = server.client.post("/v1/answer", headers=KEY,
                                   json={**question, "strategy": strategy})
        assert reply.status_code == 200, reply.text          # multi read row 400 and up
        return [p["id"] for p in reply.json()["passages"]]

    try:
        assert "new-1" not in cited("single")        # the strategies are built here
        added = server.client.post("/v1/documents", json={"documents": [NEW]}, headers=KEY)
        assert added.status_code == 200, added.text
        assert "new-1" in cited("single") and "new-1" in cited("multi")
        gone = server.client.request("DELETE", "/v1/documents", headers=KEY,
                                     json={"ids": ["new-1"]})
        assert gone.status_code == 200, gone.text
        assert "new-1" not in cited("single") and "new-1" not in cited("multi")
    finally:
        server.close()
        searcher.close()
