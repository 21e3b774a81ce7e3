"""The three arms end to end: real SmolLM2 GGUF (llama.cpp) over the real 400-passage index."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from retrievers.funnel import FunnelRetriever
from searchagent.answers import extract_answer, first_sentence, has_answer
from searchagent.config import Config
from searchagent.errors import InputError
from searchagent.strategies.base import Answer, Strategy
from searchagent.strategies.hop_query import bridge_entities, next_query
from searchagent.types import Hit

QUESTION = "The band who released the debut album \"Tinted Windows\" had their first " \
           "performance in what city?"


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.llama_cpp import LlamaCppGenerator

    return LlamaCppGenerator(threads=1, context_tokens=2048)


def spent(answer: Answer) -> tuple[int, int]:
    gens = [s for s in answer.trace if s.kind == "generate"]
    return (sum(s.detail["prompt_tokens"] for s in gens),
            sum(s.detail["completion_tokens"] for s in gens))


def test_answer_convention():
    assert extract_answer("Tulsa is in Oklahoma. So the answer is: Tulsa.") == "Tulsa"
    assert extract_answer(" \"New York City\".\nmore") == "New York City"
    assert extract_answer("The answer is: Answer: 1998 census. Then") == "1998 census"
    assert extract_answer("so the answer is Jeremy Renner") == "Jeremy Renner"
    assert extract_answer("Dr. No") == "Dr. No"
    assert has_answer("So the answer is: x") and not has_answer("The band is from Tulsa.")
    assert first_sentence("It is Tulsa. Then B.\nC") == "It is Tulsa."
    assert first_sentence("J. R. R. Tolkien wrote it. Yes") == "J. R. R. Tolkien wrote it."


def test_hop_queries_add_bridge_entities():
    hit = Hit(id="1", score=1.0, title="Tinted Windows (album)",
              text="Tinted Windows is the debut album by the supergroup Tinted Windows, "
                   "formed by Taylor Hanson and James Iha.")
    entities = bridge_entities(QUESTION, [hit])
    assert "Taylor Hanson" in entities and "James Iha" in entities
    assert not any(e.lower() == "tinted windows" for e in entities)
    step = "Tinted Windows was formed by Taylor Hanson."
    assert next_query("question", QUESTION, step, [hit]) == QUESTION
    assert next_query("step", QUESTION, step, [hit]) == step
    assert next_query("step", QUESTION, "", [hit]) == QUESTION
    copied = "So the answer is: <short answer>"        # the instruction, copied: no query
    assert next_query("step", QUESTION, copied, [hit]) == QUESTION
    assert "short" not in next_query("bridge", QUESTION, copied, [hit])
    bridge = next_query("bridge", QUESTION, step, [hit])
    assert bridge.startswith(QUESTION) and "James Iha" in bridge
    with pytest.raises(ValueError, match="hop query"):
        next_query("nope", QUESTION, step, [hit])


def test_parametric(generator):
    from searchagent.strategies.parametric import ParametricStrategy

    strategy = ParametricStrategy(generator, max_new_tokens=8)
    assert isinstance(strategy, Strategy)
    answer = strategy.run(QUESTION, {"session": "p1"})
    assert answer.strategy == "parametric" and answer.answer
    assert answer.retrieval_calls == 0 and answer.hops == 0 and answer.passages == []
    assert [s.kind for s in answer.trace] == ["generate"]
    assert (answer.prompt_tokens, answer.completion_tokens) == spent(answer)
    assert answer.confidence is not None and answer.confidence < 0
    assert answer.seconds >= answer.trace[0].seconds


def test_single_retrieves_once_within_budget(generator, searcher):
    from searchagent.strategies.single import SingleStrategy

    strategy = SingleStrategy(searcher.retriever("hybrid"), generator, k=5,
                              context_budget_tokens=300, max_new_tokens=8)
    answer = strategy.run(QUESTION, {"k": 2})
    assert answer.strategy == "single" and answer.retrieval_calls == 1 and answer.hops == 1
    assert [s.kind for s in answer.trace] == ["retrieve", "generate"]
    assert len(answer.passages) == 2
    rows = searcher.docstore.rows_for_ids([p["id"] for p in answer.passages])
    stored = searcher.docstore.fetch(list(rows.values()))
    assert {stored[rows[p["id"]]].title for p in answer.passages} == \
        {p["title"] for p in answer.passages}
    assert any("Tinted Windows" in p["title"] for p in answer.passages)
    assert answer.prompt_tokens < 300 + 150          # passages within budget + instructions
    assert (answer.prompt_tokens, answer.completion_tokens) == spent(answer)


def test_multi_hops_dedups_and_reuses_the_prompt_prefix(generator, searcher):
    from searchagent.strategies.multi import MultiHopStrategy

    funnel = FunnelRetriever(searcher, coarse_k=40, shortlist=10)
    strategy = MultiHopStrategy(funnel, generator, k=4, max_hops=3, min_hops=2,
                                context_budget_tokens=240, step_tokens=8, max_new_tokens=6)
    answer = strategy.run(QUESTION, {"session": "m1"})
    assert answer.strategy == "multi" and 2 <= answer.hops <= 3
    assert answer.retrieval_calls == answer.hops
    kinds = [s.kind for s in answer.trace]
    assert kinds[:3] == ["retrieve", "generate", "retrieve"] and kinds[-1] == "generate"
    ids = [p["id"] for p in answer.passages]
    assert len(ids) == len(set(ids)) == 2 * answer.hops       # hop_k = 2 new per hop
    queries = [s.detail["query"] for s in answer.trace if s.kind == "retrieve"]
    assert queries[0] == QUESTION and queries[1].startswith(QUESTION) and queries[1] != QUESTION
    gens = [s for s in answer.trace if s.kind == "generate"]
    assert all(g.detail["cached_tokens"] > 0 for g in gens[1:])  # append-only prompts
    assert (answer.prompt_tokens, answer.completion_tokens) == spent(answer)
    assert answer.confidence is not None
    one = strategy.run(QUESTION, {"max_hops": 1})
    assert one.hops == 1 and [s.kind for s in one.trace] == ["retrieve", "generate"]
    cancel = threading.Event()
    cancel.set()
    stopped = strategy.run(QUESTION, {"budget": {"cancel": cancel}})
    assert stopped.retrieval_calls == 0 and stopped.passages == []
    assert [s.kind for s in stopped.trace] == ["generate"]


def test_make_strategy(generator, searcher):
    from searchagent.strategies.factory import make_strategy

    config = Config()
    assert [make_strategy(n, searcher, generator, config).name
            for n in ("parametric", "single", "multi")] == ["parametric", "single", "multi"]
    with pytest.raises(InputError, match="strategy"):
        make_strategy("oracle", searcher, generator, config)
    with pytest.raises(InputError, match="needs an index"):
        make_strategy("multi", None, generator, config)


def test_ask_cli_json_and_text(small_index):
    run = subprocess.run([sys.executable, "-m", "searchagent", "ask", str(small_index),
                          QUESTION, "--strategy", "single", "-k", "2", "--json"],
                         capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ,
                              "SEARCHAGENT__GENERATOR__MAX_NEW_TOKENS": "6",
                              "SEARCHAGENT__GENERATOR__THREADS": "1"})
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["strategy"] == "single" and len(answer["passages"]) == 2
    assert [s["kind"] for s in answer["trace"]] == ["retrieve", "generate"]
    from searchagent.cli.ask_cmd import format_answer

    text = format_answer(Answer(**{**answer, "trace": []}))
    assert "strategy: single" in text and answer["passages"][0]["title"] in text
    bad = subprocess.run([sys.executable, "-m", "searchagent", "ask", str(small_index), " "],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "empty question" in bad.stderr


def test_ask_cli_auto_lets_the_trained_policy_pick(small_index, searcher, tmp_path):
    from policies.persistence import save_policy
    from tests.policy_data import retrieve_once_cascade

    save_policy(retrieve_once_cascade(searcher.encoder), tmp_path / "cascade")
    run = subprocess.run([sys.executable, "-m", "searchagent", "ask", str(small_index),
                          QUESTION, "--json"], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ,
                              "SEARCHAGENT__AGENT__POLICY_DIR": str(tmp_path / "cascade"),
                              "SEARCHAGENT__GENERATOR__MAX_NEW_TOKENS": "6",
                              "SEARCHAGENT__GENERATOR__THREADS": "1"})
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    decision = answer["trace"][0]
    assert decision["kind"] == "policy" and decision["detail"]["policy"] == "cascade"
    assert decision["detail"]["ran"] == ["parametric", "single"]
    assert answer["strategy"] == "single" and answer["retrieval_calls"] == 1
    assert "lam_requested" not in decision["detail"]        # its trained lambda
    dear = subprocess.run([sys.executable, "-m", "searchagent", "ask", str(small_index),
                           QUESTION, "--json", "--lam", "0.3"], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ,
                                            "SEARCHAGENT__AGENT__POLICY_DIR":
                                                str(tmp_path / "cascade"),
                                            "SEARCHAGENT__GENERATOR__MAX_NEW_TOKENS": "6",
                                            "SEARCHAGENT__GENERATOR__THREADS": "1"})
    assert dear.returncode == 0, dear.stderr               # ask had no way to give a lambda
    assert json.loads(dear.stdout)["trace"][0]["detail"]["lam_requested"] == 0.3
    for flags, message in ((["-k", "0"], "field 'retrieval.k': must be >= 1"),
                           (["--strategy", "single", "--lam", "0.1"], "runs no policy"),
                           (["--lam", "-1"], "field 'lam': must be a finite number")):
        bad = subprocess.run([sys.executable, "-m", "searchagent", "ask", str(small_index),
                              "q", *flags], capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_retrieval_only_ablation_runs_every_hop(searcher):
    from searchagent.strategies.multi import MultiHopStrategy
    from searchagent.strategies.single import SingleStrategy

    funnel = FunnelRetriever(searcher, coarse_k=40, shortlist=10)
    multi = MultiHopStrategy(funnel, None, k=4, max_hops=3).run(QUESTION)
    assert multi.answer == "" and multi.hops == multi.retrieval_calls == 3
    assert {s.kind for s in multi.trace} == {"retrieve"} and len(multi.passages) == 6
    single = SingleStrategy(searcher.retriever("hybrid"), None, k=4).run(QUESTION)
    assert single.retrieval_calls == 1 and len(single.passages) == 4
