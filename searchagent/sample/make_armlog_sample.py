"""Rebuild the bundled arm-log sample (run once; the output is committed).

    python searchagent/sample/make_armlog_sample.py ../shared/data/armlogs/adarague-llama31-8b

Copies ``PER_DATASET`` questions of each of the six datasets (the first by a hash of the
qid, so the choice is fixed) from the published Llama-3.1-8B arm log into ``armlog/``, in
its own layout: ``questions.jsonl`` and ``test/<arm folder>/`` with the prediction, gold
and (IRCoT) step files restricted to those questions. ``searchagent demo`` imports it
(``eval import-arms``) and trains its policy on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
PER_DATASET = 100
KEPT = ("prediction__", "ground_truth__", "stepNum.json")


def chosen(questions: list[dict]) -> set[tuple[str, str]]:
    by_dataset: dict[str, list[str]] = {}
    for row in questions:
        by_dataset.setdefault(row["dataset"], []).append(row["qid"])
    keep = set()
    for dataset, qids in by_dataset.items():
        qids.sort(key=lambda q: hashlib.sha1(f"{dataset}/{q}".encode()).hexdigest())
        keep |= {(dataset, q) for q in qids[:PER_DATASET]}
    return keep


def main(source: str) -> None:
    source_dir, out = Path(source), HERE / "armlog"
    questions = [json.loads(line) for line in open(source_dir / "questions.jsonl",
                                                   encoding="utf-8")]
    keep = chosen(questions)
    if out.exists():
        shutil.rmtree(out)
    (out / "test").mkdir(parents=True)
    with open(out / "questions.jsonl", "w", encoding="utf-8") as handle:
        for row in questions:
            if (row["dataset"], row["qid"]) in keep:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    qids = {q for _, q in keep}
    for folder in sorted((source_dir / "test").iterdir()):
        (out / "test" / folder.name).mkdir()
        for file in sorted(folder.iterdir()):
            if file.name.startswith(KEPT):
                rows = json.loads(file.read_text(encoding="utf-8"))
                subset = {q: v for q, v in rows.items() if q in qids}
                (out / "test" / folder.name / file.name).write_text(
                    json.dumps(subset, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(keep)} questions -> {out}")


if __name__ == "__main__":
    main(sys.argv[1])
