"""The web page used the way a hurried new user uses it, in Debian's chromium through
Playwright against a real ``searchagent serve`` on 127.0.0.1 (the server, policy and skip
rule of ``test_web_page.py``): Enter asks, a second submit while an answer streams is
ignored, a named arm shows no table of missing scores, and a server that stops in the
middle of an answer is named as such, with the page ready to ask again.

Each test was written from a finding of a browser audit and fails without its fix."""

from __future__ import annotations

import re
import tempfile

import pytest

from tests.test_web_page import (API_KEY, CHROMIUM_ARGS, QUESTION, STEP_TIMEOUT_MS,
                                 chromium, linucb_policy, start_server, stop_server)

pytestmark = pytest.mark.slow
__all__ = ["chromium"]                  # the fixture, imported so pytest finds it here


@pytest.fixture(scope="module")
def server_url(small_index, searcher, tmp_path_factory) -> str:
    """A server with a cascade policy (retrieve once after the closed-book answer), which
    scores nothing for an arm named in the request."""
    from policies.persistence import save_policy
    from tests.policy_data import retrieve_once_cascade

    policy = tmp_path_factory.mktemp("page-policy") / "cascade"
    save_policy(retrieve_once_cascade(searcher.encoder), policy)
    process, url = start_server(small_index, policy)
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, \
            tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            timeout=60_000)
        yield context
        context.close()


def open_page(browser, url: str):
    """A new tab on the page with the API key typed in; ``page.streams`` lists the answer
    requests it sends."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.streams = []
    page.on("request", lambda r: r.url.endswith("/v1/answer/stream") and page.streams.append(r))
    page.goto(url)
    page.locator("#key-box > summary").click()
    page.get_by_label("API key", exact=True).fill(API_KEY)
    return page


@pytest.fixture()
def page(browser, server_url):
    page = open_page(browser, server_url)
    yield page
    page.close()


def ask(page, strategy: str, question: str = QUESTION) -> None:
    page.get_by_label("Question", exact=True).fill(question)
    page.locator(f"input[name=strategy][value={strategy}]").check()
    page.get_by_role("button", name="Ask").click()


def test_a_second_submit_while_an_answer_streams_is_ignored(page):
    """Ctrl+Enter while an answer streamed sent a second request: both streams wrote into
    one trace, and the first answer to end replaced the other's (feedback then went to
    whichever request finished last)."""
    from playwright.sync_api import expect

    ask(page, "multi")
    expect(page.locator("#ask-button")).to_be_disabled()
    page.locator("input[name=strategy][value=parametric]").check()
    page.get_by_label("Question", exact=True).press("Control+Enter")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    assert len(page.streams) == 1, [r.post_data for r in page.streams]
    expect(page.locator("#answer-meta")).to_contain_text("arm multi")
    expect(page.locator("#trace .step-policy")).to_have_count(1)
    expect(page.locator("#trace .step-policy")).to_contain_text("multi (named in the request)")


def test_enter_asks_and_shift_enter_starts_a_new_line(page):
    """Enter only added a new line to the one-line question (Ctrl+Enter asked)."""
    from playwright.sync_api import expect

    question = page.get_by_label("Question", exact=True)
    page.locator("input[name=strategy][value=parametric]").check()
    question.fill("Where did Tinted Windows")
    question.press("Shift+Enter")
    question.press_sequentially("first perform?")
    expect(question).to_have_value("Where did Tinted Windows\nfirst perform?")
    assert page.streams == []
    question.press("Enter")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    assert len(page.streams) == 1
    assert page.streams[0].post_data_json["question"] == "Where did Tinted Windows\nfirst perform?"
    expect(page.locator("#question-hint")).to_contain_text("Enter asks")


def test_a_server_that_stops_mid_answer_is_named_and_the_page_recovers(
        browser, small_index, searcher, tmp_path):
    """A server killed while it streamed left only the browser's words by the Ask button
    ("network error", then "Failed to fetch" for the next question, or for feedback)."""
    from playwright.sync_api import expect

    process, url = start_server(small_index, linucb_policy(searcher, tmp_path / "policy"))
    try:
        page = open_page(browser, url)
        ask(page, "parametric")
        expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        page.route("**/v1/feedback", lambda route: route.abort("connectionrefused"))
        page.get_by_role("button", name="✓ Right").click()
        feedback = page.locator("#feedback-status")
        expect(feedback).to_contain_text(f"Could not reach the server at {url}: the feedback was not")
        expect(page.get_by_role("button", name="✓ Right")).to_be_enabled()     # can try again
        page.unroute("**/v1/feedback")
        page.locator("#max-hops").fill("8")
        ask(page, "multi")
        expect(page.locator("#trace .step-retrieve").first).to_be_visible(timeout=STEP_TIMEOUT_MS)
        process.kill()
        process.wait()
        error = page.locator("#form-error")
        expect(error).to_contain_text("Lost the connection to the server before the answer")
        expect(page.locator("#ask-button")).to_be_enabled()
        expect(page.locator("#ask-button")).to_have_text("Ask")
        expect(page.locator("#stop-button")).to_be_hidden()
        expect(page.locator("#trace-status")).to_contain_text("Failed")
        expect(page.locator("#trace .step-retrieve").first).to_be_visible()   # kept: what ran
        page.get_by_role("button", name="Ask").click()
        expect(error).to_contain_text(f"Could not reach the server at {url}")
        expect(page.locator("#ask-button")).to_be_enabled()
        expect(page.locator("#readiness")).to_have_text("server unreachable")
        # the server panel's last figures were shown as if current
        expect(page.locator("#metrics")).to_have_class(re.compile(r"\bstale\b"))
        expect(page.locator("#metrics-note")).to_contain_text("the server is not answering")
    finally:
        stop_server(process)


def test_a_named_arm_shows_no_table_of_missing_scores(page):
    """With the arm named in the request the policy scores nothing, yet the trace drew a
    table of "–" scores with three equal full-width bars, as if all arms tied."""
    from playwright.sync_api import expect

    ask(page, "parametric")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    policy = page.locator("#trace .step-policy")
    expect(policy).to_contain_text("parametric (named in the request)")
    expect(policy.locator(".scores")).to_have_count(0)


def test_an_answer_without_passages_says_so(page):
    """A closed-book answer showed the heading "Passages" over an empty list; after it, a
    retrieved answer shows the heading again."""
    from playwright.sync_api import expect

    title = page.locator("#passages-title")
    ask(page, "parametric")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(title).to_have_text("No passages: answered without retrieval")
    ask(page, "single")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(title).to_have_text("Passages")
    assert page.locator("#answer-passages li").count() > 0


def test_feedback_that_returns_after_the_next_answer_leaves_that_answer_alone(page):
    """Feedback still in flight when the next answer arrived wrote its outcome under the
    new answer ("Feedback accepted", or an error with the buttons re-enabled)."""
    from playwright.sync_api import expect

    held = []
    ask(page, "parametric")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    first = page.locator("#answer-card").evaluate("() => answered.request_id")
    page.route("**/v1/feedback", lambda route: held.append(route))     # answered later
    page.get_by_role("button", name="✗ Wrong").click()
    expect(page.locator("#feedback-status")).to_have_text("Sending…")
    ask(page, "parametric", "Who founded Tinted Windows?")
    expect(page.locator("#ask-button")).to_have_text("Ask", timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#answer-card")).to_be_visible()
    assert page.evaluate("() => answered.request_id") != first
    page.wait_for_timeout(200)
    held[0].continue_()                       # the first answer's feedback reaches the server
    page.unroute("**/v1/feedback")
    page.wait_for_load_state("networkidle")
    expect(page.locator("#feedback-status")).to_have_text("")
    expect(page.get_by_role("button", name="✗ Wrong")).to_be_enabled()


def test_a_wrong_api_key_is_called_wrong_not_missing(page):
    """A mistyped key got the same words as none: "The server needs an API key: type it"."""
    from playwright.sync_api import expect

    page.get_by_label("API key", exact=True).fill(API_KEY + "x")
    ask(page, "parametric")
    error = page.locator("#form-error")
    expect(error).to_contain_text("The server refused this API key")
    expect(page.locator("#ask-button")).to_be_enabled()
    page.get_by_label("API key", exact=True).fill("")
    page.get_by_role("button", name="Ask").click()
    expect(error).to_contain_text("The server needs an API key")


def test_a_question_past_the_deadline_shows_how_far_it_got(browser, small_index, searcher,
                                                            tmp_path):
    """A 504 (server.request_timeout_s = 1 s, a multi-hop question): the page keeps the
    trace so far, says what happened and what to do, offers no feedback, and can ask again."""
    from playwright.sync_api import expect

    process, url = start_server(small_index, linucb_policy(searcher, tmp_path / "policy"),
                                "--timeout", "1")
    try:
        page = open_page(browser, url)
        page.locator("#max-hops").fill("8")
        ask(page, "multi")
        error = page.locator("#form-error")
        expect(error).to_contain_text("504", timeout=STEP_TIMEOUT_MS)
        expect(error).to_contain_text("the trace shows how far it got")
        expect(page.locator("#trace-status")).to_contain_text("Failed")
        expect(page.locator("#trace .step-retrieve").first).to_be_visible()
        expect(page.locator("#answer-card")).to_be_hidden()
        expect(page.locator("#ask-button")).to_be_enabled()
        expect(page.locator("#stop-button")).to_be_hidden()
        assert "NaN" not in page.inner_text("body") and "undefined" not in page.inner_text("body")
    finally:
        stop_server(process)


def test_messages_read_as_a_person_writes_them(page):
    """'Type a question first.' stayed on screen while the user typed the question; a 429
    printed the admission arithmetic; one generated token read '1 tokens generated'."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Ask").click()                 # nothing typed yet
    expect(page.locator("#form-error")).to_have_text("Type a question first.")
    page.get_by_label("Question", exact=True).press_sequentially("Who")
    expect(page.locator("#form-error")).to_have_text("")
    for reason, words in (("capacity", "as many questions as it takes"),  # every 429 blamed
                          ("deadline", "before its deadline"), (None, "before its deadline")):
        busy = page.evaluate("r => describeError(429, {error: 'too many requests in flight', "
                             "detail: '3 admitted (up to 1 run at once)', reason: r})", reason)
        assert busy.startswith("The server is busy") and words in busy and "admitted" not in busy
    said = page.evaluate("describeError(422, {error: \"field 'gold': no word\", detail: "
                         "[{field: 'body.gold', message: \"field 'gold': no word\"}]})")
    assert said.count("no word") == 1, said                              # said it twice
    page.evaluate("showAnswer({request_id: 'r', answer: 'x', arm: 'parametric', steps: 0, "
                  "hops: 0, timings: {total_s: 0.5, completion_tokens: 1}, passages: []})")
    expect(page.locator("#answer-meta")).to_contain_text("1 token generated")
    page.evaluate("showAnswer({request_id: 'r', answer: 'x', arm: 'parametric', steps: 5, "
                  "hops: 5, timings: {total_s: 9}, passages: []})")   # a cascade's closed
    expect(page.locator("#passages-title")).to_have_text(             # book, after retrieving
        "No passages: the answer served was generated without them")


def test_an_api_key_a_header_cannot_carry_is_named_not_called_unreachable(page):
    from playwright.sync_api import expect

    page.get_by_label("API key", exact=True).fill("ключ")
    ask(page, "parametric")
    expect(page.locator("#form-error")).to_contain_text("a character an HTTP header cannot carry")
    page.evaluate("refreshMetrics()")            # /metrics is open: the badge stays right
    expect(page.locator("#readiness")).to_have_text("ready")


def test_keyboard_focus_follows_the_controls_and_a_rating_says_what_the_policy_needs(page):
    """Enter on Ask, Stop or a rating disabled or hid the control that had the keyboard
    focus, which fell to <body>; a rating of the cascade's answer (it learns from the
    correct answer only) said 'no trained policy learns from it'; a lambda off the field's
    0.05 step (0.07) was refused, though the server takes it."""
    from playwright.sync_api import expect

    page.get_by_label("Question", exact=True).fill(QUESTION)
    page.locator("#lam").fill("0.07")
    page.locator("#ask-button").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#answer-card")).to_be_visible(timeout=STEP_TIMEOUT_MS)
    expect(page.locator("#ask-button")).to_be_focused()         # back from Stop
    assert page.streams[-1].post_data_json["lambda"] == 0.07
    page.get_by_role("button", name="✓ Right").focus()
    page.keyboard.press("Enter")
    status = page.locator("#feedback-status")
    expect(status).to_contain_text("learns from the correct answer, not a rating")
    expect(status).to_be_focused()


def test_the_api_docs_render_without_the_internet(page, server_url):
    """FastAPI's /docs loaded Swagger UI from a CDN, so offline it was a blank page."""
    from playwright.sync_api import expect

    outside: list[str] = []
    page.on("request", lambda r: r.url.startswith(server_url) or outside.append(r.url))
    page.goto(f"{server_url}/docs")
    expect(page.locator(".opblock-summary-path", has_text="/v1/answer/stream")).to_be_visible()
    assert outside == []
