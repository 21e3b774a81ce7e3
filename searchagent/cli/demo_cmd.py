"""``searchagent demo``: the main job on the bundled sample, with nothing to download."""

from __future__ import annotations

import json
from pathlib import Path

from searchagent.config import load_config

SAMPLE = Path(__file__).resolve().parents[1] / "sample"


def register(sub) -> None:
    demo = sub.add_parser("demo", help="build an index over the bundled sample corpus and "
                          "answer sample questions")
    demo.add_argument("--index-dir", default="demo-index", help="where to build (reused if "
                      "it already holds a valid index)")
    demo.add_argument("-n", "--questions", type=int, default=3,
                      help="sample questions to answer (default 3)")
    demo.add_argument("-k", type=int, help="passages per retrieval (default: retrieval.k)")
    demo.add_argument("--strategies", default="auto,parametric,single,multi",
                      help="comma-separated: auto (the policy picks) and arms to answer "
                      "with (empty: retrieval only)")
    demo.add_argument("--policy-dir", default="demo-policy", help="where auto's policy is "
                      "trained on the bundled arm-log sample (reused if it holds a policy)")
    demo.set_defaults(func=run_demo)


def ensure_sample_index(folder: str | Path, config) -> Path:
    """Build the sample index into a missing or empty ``folder``; use it if it holds a valid
    index; refuse anything else (a damaged index, other files)."""
    from index.build import build_index
    from index.manifest import verify_index
    from searchagent.errors import IndexFormatError, InputError

    folder = Path(folder)
    empty = folder.is_dir() and not any(folder.iterdir())
    if empty or not folder.exists():
        build_index(SAMPLE / "corpus.jsonl.gz", folder, config, overwrite=folder.exists())
        return folder
    try:
        verify_index(folder, "size")
    except IndexFormatError as exc:
        raise InputError(f"--index-dir holds something other than a valid index ({exc}); "
                         "remove it or pick another folder", path=str(folder)) from exc
    print(f"using existing index {folder}")
    return folder


def sample_questions(n: int) -> list[dict]:
    with open(SAMPLE / "questions.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle)]


def run_demo(args) -> int:
    from retrievers.searcher import Searcher
    from searchagent.cli.demo_policy import describe_route, ensure_demo_policy
    from searchagent.errors import InputError

    if args.questions < 1:       # before the sample index is built
        raise InputError(f"-n/--questions must be >= 1, got {args.questions}")
    config = load_config(args.config, cli={"retrieval": {"k": args.k}})
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    if "auto" in names:
        policy = ensure_demo_policy(args.policy_dir, config.agent.lam, args.config)
        config = config.updated({"agent": {"policy_dir": str(policy)}}, "demo")
    folder = ensure_sample_index(args.index_dir, config)
    searcher = Searcher(folder, config)
    answerers, agent = _answerers(names, searcher, config)
    try:
        for question in sample_questions(args.questions):
            print(f"\nQ: {question['question']}\n   gold: {question['answers'][0]}; "
                  f"supporting: {'; '.join(question['supporting_titles'])}")
            if not answerers:
                for rank, hit in enumerate(searcher.search(question["question"],
                                                           config.retrieval.k), 1):
                    print(f"   {rank}. {hit.title}: {hit.text[:90]}")
            for name, answer_with in answerers:
                answer = answer_with(question["question"])
                titles = "; ".join(p["title"] for p in answer.passages[:6])
                print(f"   {name:>10}: {answer.answer or '(none)'!r}  "
                      f"[{answer.seconds:.1f} s, {answer.retrieval_calls} retrievals, "
                      f"{answer.prompt_tokens + answer.completion_tokens} tokens]"
                      + (f"\n{'':>15}policy: {describe_route(answer)}" if name == "auto"
                         else "")
                      + (f"\n{'':>15}passages: {titles}" if titles else ""))
    finally:
        if agent is not None:
            agent.close()
        searcher.close()
    return 0


def _answerers(names: list[str], searcher, config) -> tuple[list, object]:
    """(name, question -> Answer) per name, and the agent behind ``auto`` (or None)."""
    from searchagent.agent import make_agent
    from searchagent.generators.factory import make_generator
    from searchagent.strategies.factory import make_strategy

    if not names:
        return [], None
    generator = make_generator(config.generator)
    agent = make_agent(searcher, generator, config) if "auto" in names else None
    return [(name, (lambda q: agent.answer(q, "auto")) if name == "auto"
             else make_strategy(name, searcher, generator, config).run)
            for name in names], agent
