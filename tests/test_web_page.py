"""The web page at ``/``: served from the package, open without the API key; and driven in a
real browser (Debian's chromium through Playwright) against a real ``searchagent serve``
with the bundled GGUF model and a trained policy: a question goes in, the trace steps and
the answer appear, feedback is accepted. Screenshots land in ``test-artifacts/``.

The browser test skips, saying why, where chromium or the playwright package is missing
(``make test`` installs chromium with apt-get when it runs as root)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from searchagent.config import Config
from searchagent.server.app import create_app
from tests.conftest import sample_questions

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SEARCHAGENT_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SEARCHAGENT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API_KEY = "page-test-key"
STEP_TIMEOUT_MS = 240_000          # one answer on a busy 2-core machine
QUESTION = sample_questions()[0]["question"]


def test_page_and_its_files_are_served_without_the_key():
    app = create_app(None, Config().updated({"server": {"api_key": API_KEY}}, "test"))
    client = TestClient(app)             # no lifespan: the page needs no answer service
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert '<html lang="en">' in html and 'aria-live="polite"' in html
    assert not re.search(r"""(src|href)=["']https?://""", html)          # works offline
    for asset in re.findall(r"""(?:src|href)="(/static/[^"]+)""", html):
        served = client.get(asset)
        assert served.status_code == 200 and served.text.strip(), asset
    script = client.get("/static/app.js").text
    assert "sessionStorage" in script and "localStorage" not in script
    assert client.get("/static/%2e%2e/app.py").status_code == 404          # no way out
    assert client.post("/v1/search", json={"query": "x"}).status_code == 401
    assert "/" not in client.get("/openapi.json").json()["paths"]
    # no page it links to loads files from elsewhere (FastAPI's own /docs took Swagger UI
    # from a CDN: blank offline), and theirs are served without the key (/metrics needs the
    # service: a 500 here)
    links = TestClient(app, raise_server_exceptions=False)
    for href in re.findall(r'<a href="(/[^"]*)"', html):
        linked = links.get(href).text
        assert not re.search(r"""(?:src|href)=["']https?://""", linked), href
        for asset in re.findall(r"""(?:src|href)=["'](/[^"']+)""", linked):
            assert client.get(asset).status_code == 200, (href, asset)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser's path, or a skip that says what is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (install Debian's chromium: `apt-get install "
                    "-y chromium chromium-driver`, which `make test` does when run as root)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")
    return CHROMIUM


@pytest.fixture()
def policy_dir(searcher, tmp_path) -> Path:
    return linucb_policy(searcher, tmp_path / "policy")


def linucb_policy(searcher, folder: Path) -> Path:
    """A LinUCB policy whose prior makes 'single' the greedy arm (scores for every arm)."""
    from policies.features import FeatureMap, FeatureSpec, embedder_identity
    from policies.linucb import LinUCB
    from policies.persistence import PolicyBundle, save_policy
    from policies.rewards import RewardSpec

    spec = FeatureSpec(embedder=embedder_identity(searcher.encoder),
                       embed_dim=searcher.encoder.dim, projection="random", proj_dim=16)
    fmap = FeatureMap.fit(spec)
    bundle = PolicyBundle(LinUCB(fmap.dim, alpha=0.0), fmap, RewardSpec(lam=0.1))
    bundle.policy.b[1] = bundle.policy.b_quality[1] = 1.0      # for any requested lambda
    bundle.policy.theta[1] = bundle.policy.A_inv[1] @ bundle.policy.b[1]
    save_policy(bundle, folder)
    return folder


@pytest.fixture()
def cascade_dir(searcher, tmp_path) -> Path:
    """A cascade that retrieves once after the closed-book answer and serves that answer."""
    from policies.persistence import save_policy
    from tests.policy_data import retrieve_once_cascade

    save_policy(retrieve_once_cascade(searcher.encoder), tmp_path / "cascade")
    return tmp_path / "cascade"


def start_server(index_dir: Path, policy: Path, *args: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "SEARCHAGENT__GENERATOR__THREADS": "1",
           "SEARCHAGENT__GENERATOR__MAX_NEW_TOKENS": "12",
           "SEARCHAGENT__AGENT__POLICY_DIR": str(policy),
           "SEARCHAGENT__AGENT__FEWSHOT": "0"}
    process = subprocess.Popen([sys.executable, "-m", "searchagent", "serve", str(index_dir),
                                "--port", "0", "--sessions", "1", "--api-key", API_KEY, *args],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    for line in process.stdout:                   # warnings may come before the address
        output.append(line)
        if " on http://" in line or len(output) > 50:
            break
    assert " on http://127.0.0.1:" in output[-1], "".join(output)
    url = output[-1].split(" on ")[1].split()[0]
    threading.Thread(target=process.stdout.read, daemon=True).start()   # keep draining
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "server not ready"
            try:
                if client.get("/readyz").status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
            time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_ask_watch_the_trace_and_give_feedback_in_chromium(chromium, small_index, policy_dir):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process, url = start_server(small_index, policy_dir)
    problems: list[str] = []
    try:
        with sync_playwright() as playwright, \
                tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900}, timeout=60_000)
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
                page.on("console", lambda m: m.type == "error" and problems.append(m.text))
                drive(page, expect, url)
                shot = ARTIFACTS / "web-page.png"
                page.screenshot(path=str(shot), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})      # a phone
                assert page.evaluate("document.documentElement.scrollWidth") <= 390
                phone = ARTIFACTS / "web-page-phone.png"
                page.screenshot(path=str(phone), full_page=True)
                print(f"\nscreenshots: {shot} {phone}")
            finally:
                browser.close()
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'http_responses_total{route="/v1/feedback",status="200"} 1' in metrics
        assert 'route="/v1/answer/stream",status="200"} 1' in metrics
    finally:
        stop_server(process)
    expected = "status of 401"                  # the one request sent before the key was typed
    assert sum(expected in p for p in problems) == 1, problems
    assert not [p for p in problems if expected not in p], problems


@pytest.mark.slow
def test_cascade_steps_show_in_running_order_in_chromium(chromium, small_index, cascade_dir):
    from playwright.sync_api import expect, sync_playwright

    process, url = start_server(small_index, cascade_dir)
    try:
        with sync_playwright() as playwright, \
                tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
                timeout=60_000)
            try:
                page = browser.new_page()
                page.goto(url)
                page.locator("#key-box > summary").click()
                page.get_by_label("API key", exact=True).fill(API_KEY)
                page.get_by_label("Question", exact=True).fill(QUESTION)
                page.get_by_role("button", name="Ask").click()
                expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
                steps = page.locator("#trace > li")
                kinds = [steps.nth(i).get_attribute("class").split("step-")[-1]
                         for i in range(steps.count())]
                # closed book, then the first decision, one retrieval, its answer, the second
                assert kinds == ["generate", "policy", "retrieve", "generate", "policy"], kinds
                policy = page.locator("#trace .step-policy")
                expect(policy.first).to_contain_text("cascade after closed book: single")
                expect(policy.last.locator("tr.chosen th")).to_have_text("serve single")
                expect(policy.last.locator(".scores tbody tr")).to_have_count(3)
                expect(page.locator("#answer-meta")).to_contain_text("arm single")
            finally:
                browser.close()
    finally:
        stop_server(process)


def drive(page, expect, url: str) -> None:
    """Ask with the API key typed in, watch the trace and answer, send a thumbs-up."""
    page.goto(url)
    expect(page.locator("#readiness")).to_have_text("ready")
    expect(page.locator("#metrics")).to_contain_text("answers")
    page.get_by_label("Question", exact=True).fill(QUESTION)
    page.get_by_role("button", name="Ask").click()                  # no key yet: 401
    expect(page.locator("#form-error")).to_contain_text("needs an API key")
    expect(page.locator("#key-box")).to_have_attribute("open", "")
    page.get_by_label("API key", exact=True).fill(API_KEY)
    page.get_by_label("auto").check()
    page.get_by_label("λ (cost)").fill("0.2")
    page.get_by_label("k (passages)").fill("2")
    page.get_by_label("Question", exact=True).press("Control+Enter")            # keyboard submit

    answer = page.locator("#answer-card")
    expect(answer).to_be_visible(timeout=STEP_TIMEOUT_MS)
    trace = page.locator("#trace")
    policy = trace.locator(".step-policy")
    expect(policy).to_have_count(1)
    expect(policy.locator(".scores tbody tr")).to_have_count(3)
    expect(policy.locator("tr.chosen th")).to_have_text("single")
    expect(policy).to_contain_text("λ = 0.2")
    retrieval = trace.locator(".step-retrieve")
    expect(retrieval).to_have_count(1)
    expect(retrieval.locator(".passages li")).to_have_count(2)
    expect(retrieval.locator(".snippet").first).not_to_be_empty()
    expect(retrieval).to_contain_text("score")
    assert trace.locator(".step-generate").count() >= 1
    expect(trace.locator(".step-generate").first).to_contain_text("new tokens")
    expect(page.locator("#answer-meta")).to_contain_text("arm single")
    expect(page.locator("#answer-passages li")).to_have_count(2)
    expect(page.locator("#trace-status")).to_contain_text("Answered in")

    page.get_by_role("button", name="✓ Right").click()
    status = page.locator("#feedback-status")
    expect(status).to_contain_text("Feedback accepted", timeout=60_000)
    expect(status).to_contain_text("the policy learned from it")
    assert page.evaluate("sessionStorage.getItem('searchagent.apiKey')") == API_KEY
    assert page.evaluate("localStorage.length") == 0 and page.context.cookies() == []
    expect(page.locator("#metrics dt:text-is('answers') + dd")).to_have_text("1")
