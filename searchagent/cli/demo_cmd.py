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
    demo.add_argument("-n", "--questions", type=int, default=3)
    demo.add_argument("-k", type=int, default=3)
    demo.set_defaults(func=run_demo)


def ensure_sample_index(folder: str | Path, config) -> Path:
    """Build the sample index unless a valid one is already there."""
    from index.build import build_index
    from index.manifest import verify_index
    from searchagent.errors import IndexFormatError

    folder = Path(folder)
    try:
        verify_index(folder, "size")
        print(f"using existing index {folder}")
    except IndexFormatError:
        build_index(SAMPLE / "corpus.jsonl.gz", folder, config, overwrite=folder.exists())
    return folder


def sample_questions(n: int) -> list[dict]:
    with open(SAMPLE / "questions.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(n), handle)]


def run_demo(args) -> int:
    from retrievers.searcher import Searcher

    config = load_config(args.config)
    folder = ensure_sample_index(args.index_dir, config)
    searcher = Searcher(folder, config)
    for question in sample_questions(args.questions):
        print(f"\nQ: {question['question']}\n   gold: {question['answers'][0]}; supporting: "
              f"{'; '.join(question['supporting_titles'])}")
        for rank, hit in enumerate(searcher.search(question["question"], args.k), start=1):
            print(f"   {rank}. {hit.title}: {hit.text[:90]}")
    return 0
