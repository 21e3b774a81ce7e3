"""The multi-hop arm, IRCoT-style: alternate one retrieval and one reasoning sentence until
the generator states an answer (after at least ``min_hops``) or ``max_hops`` is reached.
With ``generator=None`` it only retrieves (every hop, queries without reasoning steps):
the retrieval-only ablation in ``benchmarks/strategies.py``.

Each hop retrieves through the coarse-to-fine funnel (``retrievers.funnel``), never
returning a passage an earlier hop already found. Passages enter the prompt append-only
with a fixed per-passage token cap, so the prompt of hop n+1 extends the prompt of hop n
and a prefix-caching backend reuses its KV state (the session id is passed through).
"""

from __future__ import annotations

from searchagent import prompts
from searchagent.answers import extract_answer, first_sentence, has_answer, has_marker
from searchagent.strategies.base import Answer
from searchagent.strategies.hop_query import MODES, next_query
from searchagent.strategies.tracking import Tracker


class MultiHopStrategy:
    name = "multi"

    def __init__(self, funnel, generator, k: int = 5, max_hops: int = 4, min_hops: int = 2,
                 hop_k: int | None = None, context_budget_tokens: int = 1200,
                 hop_query: str = "bridge", step_tokens: int = 40, max_new_tokens: int = 48,
                 shots: int = 1):
        if hop_query not in MODES:
            raise ValueError(f"unknown hop query mode {hop_query!r} (choose from "
                             f"{', '.join(MODES)})")
        self.funnel, self.generator = funnel, generator
        self.k, self.max_hops, self.min_hops, self.hop_k = k, max_hops, min_hops, hop_k
        self.budget_tokens, self.hop_query = context_budget_tokens, hop_query
        self.step_tokens, self.max_new_tokens, self.shots = step_tokens, max_new_tokens, shots

    def run(self, question: str, ctx: dict | None = None) -> Answer:
        track = Tracker(self.name, self.generator, ctx)
        k = int(track.ctx.get("k", self.k))
        max_hops = max(1, int(track.ctx.get("max_hops", self.max_hops)))
        hop_k = self.hop_k or max(2, (k + 1) // 2)
        per_passage = max(48, self.budget_tokens // (hop_k * max_hops))
        hits_so_far, seen_rows, steps = [], set(), []
        query, answer, final, hops = question, None, None, 0
        for hop in range(1, max_hops + 1):
            if track.stopped():
                break
            new_hits = track.retrieve(self.funnel, query, hop_k, exclude=seen_rows)
            hops = hop
            hits_so_far += new_hits
            seen_rows |= {hit.row for hit in new_hits}
            if self.generator is None:          # retrieval-only ablation: no reasoning step
                query = next_query(self.hop_query, question, "", new_hits)
                continue
            passages = track.pack(hits_so_far, self.budget_tokens, per_passage)
            if hop == max_hops or track.stopped():
                break
            messages = track.fit(
                lambda q, p: prompts.reasoning_messages(q, p, steps, self.shots),
                question, passages, self.step_tokens)
            result = track.generate(messages, self.step_tokens, stop=["\n"],
                                    purpose=f"reason hop {hop}")
            if has_answer(result.text) and hop >= self.min_hops:
                answer, final = extract_answer(result.text, question), result
                break
            step = first_sentence(result.text)
            if step and not has_marker(step) and step not in steps:   # a repeat adds nothing
                steps.append(step)
            query = next_query(self.hop_query, question, first_sentence(result.text), new_hits)
        if self.generator is None:
            return track.answer("", hops=hops, confidence=None)
        if answer is None:
            passages = track.pack(hits_so_far, self.budget_tokens, per_passage)
            messages = track.fit(
                lambda q, p: prompts.final_messages(q, p, steps, self.shots),
                question, passages, self.max_new_tokens)
            final = track.generate(messages, self.max_new_tokens, stop=["\n"],
                                   purpose="final answer")
            answer = extract_answer(final.text, question)
        return track.answer(answer, hops=hops, confidence=final.mean_logprob)
