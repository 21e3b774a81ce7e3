// The searchagent page: ask over POST /v1/answer/stream (server-sent events read from a
// fetch body, since EventSource cannot POST), show each trace step as it arrives, send
// feedback to /v1/feedback, and poll /metrics and /readyz. No dependencies.
"use strict";

const KEY_STORE = "searchagent.apiKey";   // sessionStorage: this tab only
const METRICS_EVERY_MS = 5000;

let running = null;       // the AbortController of the request in flight
let answered = null;      // the last answer (for feedback)

function headers() {
  const out = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (/[^\x20-\x7e\xa0-\xff]/.test(key)) {    // fetch cannot put it in a header
    $("key-box").open = true;
    throw new Error("The API key has a character an HTTP header cannot carry (only Latin-1 " +
      "letters, digits and signs): check it under “API key”.");
  }
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

// ---- requests, and server-sent events over fetch --------------------------------------
const LOST = "Lost the connection to the server before the answer arrived (did the server stop?). " +
  "Ask again once it is back.";

async function post(path, body, what, signal) {
  const sent = headers();
  try {        // the browser's own words for a refused connection are "Failed to fetch"
    return await fetch(path, { method: "POST", headers: sent, body: JSON.stringify(body), signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error(`Could not reach the server at ${location.origin}: ${what}. Is searchagent serve running?`);
  }
}

async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch (err) {   // "network error" when cut mid-stream
      if (err.name === "AbortError") throw err;
      throw new Error(LOST);
    }
    const { value, done } = chunk;
    if (done) break;
    buffer += value;
    const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
    buffer = blocks.pop();
    for (const block of blocks) {
      const event = parseEvent(block);
      if (event) yield event;
    }
  }
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}

// ---- asking -----------------------------------------------------------------------
function requestBody() {
  const body = { question: $("question").value.trim(),
    strategy: document.querySelector("input[name=strategy]:checked").value };
  for (const [id, name] of [["lam", "lambda"], ["k", "k"], ["max-hops", "max_hops"]]) {
    const field = $(id);
    if (field.value !== "") body[name] = Number(field.value);
    if (!field.checkValidity()) throw new Error(`${field.labels[0].textContent}: ${field.validationMessage}`);
  }
  if (!body.question) throw new Error("Type a question first.");
  return body;
}

function describeError(status, body) {
  if (status === 401) {
    $("key-box").open = true;
    return $("api-key").value.trim() ? "The server refused this API key: check it under “API key”."
      : "The server needs an API key: type it under “API key”.";
  }
  if (status === 429) return `The server is busy (429): ${BUSY[body.reason] || BUSY.deadline}`;
  const error = body.error || "request failed";
  const detail = (Array.isArray(body.detail)       // a 422 repeats its error per field
    ? body.detail.map((d) => (d.message === error ? "" : `${d.field}: ${d.message}`)).filter(Boolean).join("; ")
    : body.detail) || "";
  return `${status}: ${error}${detail && !error.includes(detail) ? ` (${detail})` : ""}` +
    (HINTS[status] ? `. ${HINTS[status]}` : "");
}

const BUSY = {       // the 429's reason (server/limits.py, Admission.acquire)
  capacity: "it is answering as many questions as it takes at once.",
  unmeasured: "it answers one question of this kind at a time until it has timed one.",
  deadline: "it would not answer this before its deadline.",
};

const HINTS = {
  504: "The server stopped working on it at its deadline: the trace shows how far it got. " +
    "Ask again when the server is less busy, or pick a cheaper strategy (parametric, single).",
};

async function ask(event) {
  event.preventDefault();
  if (running) return;      // one answer at a time: Ctrl+Enter reaches here past the disabled button
  $("form-error").textContent = "";
  let body;
  try { body = requestBody(); } catch (err) { showInputError(err.message); return; }
  running = new AbortController();
  answered = null;
  resetTrace();
  $("answer-card").hidden = true;
  setBusy(true, "Waiting for the server…");
  try {
    const response = await post("/v1/answer/stream", body, "the question was not sent", running.signal);
    if (!response.ok) {
      const payload = await response.json().catch(() => ({}));
      const retry = response.headers.get("retry-after");
      throw new Error(describeError(response.status, payload) + (retry ? ` Retry in ${retry} s.` : ""));
    }
    for await (const { name, data } of sseEvents(response)) {
      if (name === "start") setBusy(true, "Working…");
      else if (name === "step") onStep(data);
      else if (name === "answer") showAnswer(data);
      else if (name === "error") throw new Error(describeError(data.status, data));
    }
    if (!answered) throw new Error(LOST);              // the stream ended with neither answer nor error
    setBusy(false, `Answered in ${seconds((answered.timings || {}).total_s)}.`);
  } catch (err) {
    const stopped = err.name === "AbortError";
    setBusy(false, stopped ? "Stopped." : "Failed (see the message by the Ask button).");
    if (!stopped) $("form-error").textContent = err.message;
  } finally {
    running = null;
    refreshMetrics();
  }
}

function showInputError(message) {      // cleared as soon as the user edits the form
  $("form-error").textContent = message;
  $("ask-form").addEventListener("input", () => { $("form-error").textContent = ""; }, { once: true });
}

function setBusy(busy, message) {
  const focused = document.activeElement;      // a control about to be disabled or hidden
  $("ask-button").disabled = busy;             // hands the keyboard focus to <body>: move it on
  $("ask-button").textContent = busy ? "Asking…" : "Ask";
  $("stop-button").hidden = !busy;
  $("trace-status").textContent = message;
  if (busy && focused === $("ask-button")) $("stop-button").focus();
  else if (!busy && focused === $("stop-button")) $("ask-button").focus();
}

function showAnswer(answer) {
  answered = answer;
  const decision = (answer.trace || []).find((s) => s.kind === "policy");
  if (decision && !counts.policy) showPolicy(decision);
  $("answer-text").textContent = answer.answer || "(empty answer)";
  const t = answer.timings || {};
  $("answer-meta").textContent = [`arm ${answer.arm}`, plural(answer.steps, "retrieval step"),
    answer.hops ? plural(answer.hops, "hop") : null, `${seconds(t.total_s)} total`,
    t.completion_tokens != null ? `${plural(t.completion_tokens, "token")} generated` : null]
    .filter(Boolean).join(" · ");
  const passages = answer.passages || [];
  $("passages-title").textContent = passages.length ? "Passages"
    : answer.steps ? "No passages: the answer served was generated without them"
      : "No passages: answered without retrieval";
  $("answer-passages").replaceWith(Object.assign(passageList(passages), { id: "answer-passages" }));
  $("feedback-status").textContent = "";
  $("feedback-status").className = "";
  $("gold").value = "";
  for (const control of $("feedback-form").querySelectorAll("button, input")) control.disabled = false;
  $("answer-card").hidden = false;
}

// ---- feedback ---------------------------------------------------------------------
async function sendFeedback(signal) {
  const rated = answered;
  if (!rated) return;
  const status = $("feedback-status");
  const controls = $("feedback-form").querySelectorAll("button, input");
  controls.forEach((c) => { c.disabled = true; });
  status.className = "";
  status.textContent = "Sending…";
  try {
    const response = await post("/v1/feedback", { request_id: rated.request_id, ...signal },
      "the feedback was not sent");
    const body = await response.json().catch(() => ({}));
    if (answered !== rated) return;      // another question was asked meanwhile: not its card
    if (!response.ok) throw Object.assign(new Error(describeError(response.status, body)),
      { status: response.status });
    const d = body.detail || {};
    status.className = "ok";
    status.textContent = `Feedback accepted: reward ${score(d.reward)}` +
      (d.quality != null ? `, quality ${score(d.quality)}` : "") + `; ${learned(d, rated)}`;
    status.focus();                  // the controls it came from are disabled now
  } catch (err) {
    if (answered !== rated) return;
    status.className = "error";
    status.textContent = err.message;
    if (err.status !== 503) controls.forEach((c) => { c.disabled = false; });   // 503: no
    status.focus();                                                 // agent takes feedback
  }
}

function learned(detail, answer) {
  if (detail.applied) return "the policy learned from it.";
  const policy = String(((answer.trace || []).find((s) => s.kind === "policy") || {}).policy || "none");
  if (policy === "none" || policy.startsWith("fallback:")) return "recorded (no trained policy learns from it).";
  return detail.quality == null ? "recorded; this policy learns from the correct answer, not a " +
    "rating: type it above to teach it." : "recorded; the policy did not learn from it.";
}

// ---- server panel -----------------------------------------------------------------
function parseMetrics(text) {
  const rows = [];
  for (const line of text.split("\n")) {
    const m = line.match(/^searchagent_(\w+)(?:\{([^}]*)\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] || "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    rows.push({ name: m[1], labels, value: Number(m[3]) });
  }
  const one = (name) => rows.find((r) => r.name === name)?.value;
  const sum = (name, keep) => rows.filter((r) => r.name === name && keep(r.labels)).reduce((a, r) => a + r.value, 0);
  const answers = (ok) => sum("http_responses_total", (l) => l.route.startsWith("/v1/answer") && (l.status === "200") === ok);
  const arms = rows.filter((r) => r.name === "answers_by_arm_total").map((r) => `${r.labels.arm} ${r.value}`);
  const latency = one("answer_latency_seconds_count") ? one("answer_latency_seconds_sum") / one("answer_latency_seconds_count") : null;
  return [["answers", answers(true)], ["failed or refused", answers(false)],
    ["in flight", `${one("admitted_requests") ?? 0} / ${one("admission_capacity") ?? "?"}`],
    ["queued generations", one("queue_length") ?? 0], ["rejected (429)", one("rejected_requests_total") ?? 0],
    ["generations", one("generations_total") ?? 0], ["retrievals", one("retrievals_total") ?? 0],
    ["tokens generated", one("completion_tokens_total") ?? 0],
    ["mean latency", latency == null ? null : seconds(latency)], ["by arm", arms.join(" · ") || null]]
    .filter(([, value]) => value != null);
}

let metricsTakenAt = null;      // when the panel's figures were read

async function refreshMetrics() {
  try {
    const [metrics, ready] = await Promise.all([fetch("/metrics"), fetch("/readyz")]);   // open: no key
    const rows = parseMetrics(await metrics.text());
    $("metrics").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    const state = await ready.json().catch(() => ({}));
    $("readiness").textContent = state.ready ? "ready" : `not ready: ${state.reason || ready.status}`;
    $("readiness").className = `badge ${state.ready ? "ok" : "warn"}`;
    $("metrics").classList.remove("stale");
    $("metrics-note").textContent = "";
    metricsTakenAt = new Date();
  } catch (err) {
    $("readiness").textContent = "server unreachable";
    $("readiness").className = "badge warn";
    $("metrics").classList.add("stale");   // the last figures stay, marked as old
    $("metrics-note").textContent = metricsTakenAt
      ? `Figures from ${metricsTakenAt.toLocaleTimeString()}: the server is not answering.`
      : "The server is not answering.";
  }
}

// ---- wiring -----------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORE) || "";
  key.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, key.value));
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey || e.isComposing) return;   // Shift+Enter: a new line
    e.preventDefault();
    $("ask-form").requestSubmit();
  });
  $("stop-button").addEventListener("click", () => running && running.abort());
  for (const button of document.querySelectorAll("[data-reward]")) {
    button.addEventListener("click", () => sendFeedback({ reward: Number(button.dataset.reward) }));
  }
  $("feedback-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("gold").value.trim()) sendFeedback({ gold: $("gold").value.trim() });
    else $("gold").focus();
  });
  refreshMetrics();
  setInterval(() => { if (!document.hidden && !running) refreshMetrics(); }, METRICS_EVERY_MS);
});
