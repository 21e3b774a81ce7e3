// The searchagent page, part 1: DOM helpers and the trace (one item per policy decision,
// retrieval and generation, as the stream reports them). app.js asks and wires the page.
"use strict";

const $ = (id) => document.getElementById(id);
const ARMS = ["parametric", "single", "multi"];

let counts = {};          // trace steps seen, by kind
let snippets = {};        // passage id -> snippet, from the retrieval steps

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child != null) node.append(child);
  }
  return node;
}

const seconds = (s) => (s == null ? "?" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const score = (x) => (typeof x === "number" ? x.toFixed(3) : "–");

// ---- the trace --------------------------------------------------------------------

function addStep(kind, title, meta, ...body) {
  counts[kind] = (counts[kind] || 0) + 1;
  const item = el("li", { class: `step step-${kind}` },
    el("p", { class: "step-title" }, el("span", { class: "kind", text: kind }), " ",
      el("strong", { text: title }), meta ? el("span", { class: "meta", text: ` · ${meta}` }) : null),
    ...body);
  $("trace").append(item);
  return item;
}

function stepTime(step) {
  const at = typeof step.t === "number" ? ` · at +${seconds(step.t)}` : "";
  return `${seconds(step.seconds)}${at}`;
}

function showPolicy(step) {
  if (Array.isArray(step.cascade)) {      // a cascade's final decision: each of its steps
    for (const part of step.cascade) showPolicy({ ...part, policy: step.policy });
    return;
  }
  const cascade = typeof step.step === "string";   // one step of a cascade, in running order
  const arm = (cascade ? step.action : step.arm) || "?";
  const labels = cascade ? step.actions || [] : ARMS;
  const values = cascade ? step.values : step.scores;
  const who = step.policy || "policy";
  let title = cascade ? `${who} ${words(step.step)}: ${words(arm)}` : `${who} chose ${arm}`;
  if (step.forced) title = `${arm} (named in the request)`;
  else if (values == null) title = `${arm} (${who}: no trained policy)`;
  const meta = [step.explored ? "explored" : null, step.lam != null ? `λ = ${step.lam}` : null,
    typeof step.seconds === "number" ? seconds(step.seconds) : null].filter(Boolean).join(" · ");
  let table = null;
  const numbers = (Array.isArray(values) ? values : []).filter((v) => typeof v === "number");
  if (numbers.length) {       // a named arm's scores are all null (NaN): no table of dashes
    const best = Math.max(...numbers), worst = Math.min(...numbers);
    table = el("table", { class: "scores" },
      el("caption", { class: "sr-only", text: "Score of each choice" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: cascade ? "choice" : "arm" }),
        el("th", { scope: "col", text: "score" }), el("th", { scope: "col", text: "" }))),
      el("tbody", {}, values.map((value, i) => {
        const share = typeof value !== "number" ? null : best > worst ? (value - worst) / (best - worst) : 1;
        const bar = share == null ? null : el("span", { class: "bar", "aria-hidden": "true" });
        if (bar) bar.style.width = `${Math.round(10 + 90 * share)}%`;
        return el("tr", { class: labels[i] === arm ? "chosen" : "" },
          el("th", { scope: "row", text: words(labels[i] || `choice ${i}`) }),
          el("td", { class: "num", text: score(value) }), el("td", { class: "bar-cell" }, bar));
      })));
  }
  const item = addStep("policy", title, meta, table);
  if (!cascade) $("trace").prepend(item);   // heads the trace even when it came last
}

function words(name) {
  return String(name).replaceAll("_", " ");
}

function showRetrieval(step) {
  const n = counts.retrieve || 0;
  const flags = [step.partial ? "cut short: best-so-far passages" : null,
    step.nonstall_cut ? "by the non-stall rule" : null];
  const passages = (step.passages || (step.hits || []).map((id) => ({ id, title: id })));
  for (const p of passages) if (p.snippet) snippets[p.id] = p.snippet;
  addStep("retrieve", `#${n + 1}`, `${plural(passages.length, "passage")} · ${stepTime(step)}`,
    step.query ? el("p", { class: "query" }, "query: ", el("q", { text: step.query })) : null,
    flags.some(Boolean) ? el("p", { class: "muted", text: flags.filter(Boolean).join(" · ") }) : null,
    passageList(passages));
}

function showGeneration(step) {
  const n = counts.generate || 0;
  const tokens = `${step.prompt_tokens ?? "?"} prompt → ${step.completion_tokens ?? "?"} new tokens`;
  const wait = step.queue_wait_s ? ` (queued ${seconds(step.queue_wait_s)})` : "";
  addStep("generate", `#${n + 1}`, `${tokens} · ${stepTime(step)}${wait}`,
    step.text ? el("p", { class: "gen-text", text: step.text }) : null);
}

function passageList(passages) {
  return el("ol", { class: "passages" }, passages.map((p) => el("li", {},
    el("p", {}, el("strong", { text: p.title || p.id }), " ",
      el("span", { class: "muted", text: `score ${score(p.score)}` })),
    p.snippet || snippets[p.id] ? el("p", { class: "snippet", text: p.snippet || snippets[p.id] }) : null)));
}

function onStep(step) {
  if (step.kind === "policy") showPolicy(step);
  else if (step.kind === "retrieve") showRetrieval(step);
  else if (step.kind === "generate") showGeneration(step);
}

function resetTrace() {
  counts = {}; snippets = {};
  $("trace").replaceChildren();
}
