"""``searchagent ask INDEX_DIR "question" [--strategy auto|parametric|single|multi] [--json]``.

``auto`` (the default ``agent.strategy``) lets the trained policy in ``agent.policy_dir``
pick the arm, as the server does (greedy, no exploration); without a policy it answers with
the fallback arm (single).
"""

from __future__ import annotations

import dataclasses
import json
import math

from searchagent.config import load_config
from searchagent.errors import InputError
from searchagent.strategies.base import ARMS


def register(sub) -> None:
    ask = sub.add_parser("ask", help="answer one question with a strategy (arm)")
    ask.add_argument("index_dir", help="an index folder")
    ask.add_argument("question", help="the question text")
    ask.add_argument("--strategy", choices=("auto", *ARMS), help="default: agent.strategy "
                     "(auto: the policy in agent.policy_dir picks; single without one)")
    ask.add_argument("-k", type=int, help="passages per retrieval (retrieval.k; multi "
                     "retrieves max(2, (k + 1) // 2) per hop)")
    ask.add_argument("--max-hops", type=int, help="hop limit for multi (agent.max_hops)")
    ask.add_argument("--lam", type=float, help="cost of one retrieval call for auto's "
                     "policy (default: the lambda it was trained at; the REST 'lam')")
    ask.add_argument("--json", action="store_true", help="print the whole Answer as JSON")
    ask.set_defaults(func=run_ask)


def run_ask(args) -> int:
    from retrievers.searcher import Searcher
    from searchagent.agent import make_agent
    from searchagent.errors import require_text
    from searchagent.generators.factory import make_generator
    from searchagent.strategies.factory import make_strategy

    require_text(args.question, "question")
    if args.lam is not None and not (math.isfinite(args.lam) and args.lam >= 0):
        raise InputError(f"must be a finite number >= 0, got {args.lam}", field="lam")
    config = load_config(args.config, cli={"retrieval": {"k": args.k},
                                           "agent": {"max_hops": args.max_hops}})
    name = args.strategy or config.agent.strategy
    if args.lam is not None and name != "auto":
        raise InputError(f"a lambda is for the policy, and --strategy {name} runs no policy",
                         field="lam")
    searcher = Searcher(args.index_dir, config)
    try:
        generator = make_generator(config.generator)
        if name == "auto":
            agent = make_agent(searcher, generator, config)
            try:
                answer = agent.answer(args.question, "auto",
                                      None if args.lam is None else {"lam": args.lam})
            finally:
                agent.close()
        else:
            answer = make_strategy(name, searcher, generator, config).run(args.question)
    finally:
        searcher.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(answer), indent=2, default=str))
    else:
        print(format_answer(answer))
    return 0


def format_answer(answer) -> str:
    """Human-readable answer, passages and per-step timings."""
    lines = [f"answer:   {answer.answer or '(none)'}",
             f"strategy: {answer.strategy}  (hops {answer.hops}, retrieval calls "
             f"{answer.retrieval_calls}, tokens {answer.prompt_tokens} prompt + "
             f"{answer.completion_tokens} completion, {answer.seconds:.2f} s"
             + (f", confidence {answer.confidence:.3f})" if answer.confidence is not None
                else ")")]
    if answer.passages:
        lines.append("passages:")
        lines += [f"  {i:>2}. [{p['id']}] {p['title']}" for i, p in
                  enumerate(answer.passages, start=1)]
    lines.append("steps:")
    for i, step in enumerate(answer.trace, start=1):
        detail = step.detail
        if step.kind == "retrieve":
            what = f"retrieve {len(detail.get('ids', []))} for {detail.get('query', '')[:70]!r}"
        elif step.kind == "policy":
            what = (f"policy {detail.get('policy', '')} chose {detail.get('arm', '')}"
                    + (f" (request {detail['request_id']})" if detail.get("request_id") else ""))
        elif step.kind == "fit_budget":
            what = (f"fit agent.context_budget_tokens={detail['budget_tokens']}: passages "
                    f"{detail['passages_given']} -> {detail['passages']} in the prompt")
        elif step.kind == "fit_context":
            what = (f"fit the context: prompt {detail['prompt_tokens_given']} -> "
                    f"{detail['prompt_tokens']} tok, passages {detail['passages_given']} -> "
                    f"{detail['passages']}, question {detail['question_chars_given']} -> "
                    f"{detail['question_chars']} chars")
        else:
            what = (f"generate ({detail.get('purpose', '')}) {detail.get('prompt_tokens', 0)}+"
                    f"{detail.get('completion_tokens', 0)} tok: "
                    f"{detail.get('text', '')[:60]!r}")
        lines.append(f"  {i:>2}. {step.seconds * 1000:8.1f} ms  {what}")
    return "\n".join(lines)
