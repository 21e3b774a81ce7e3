"""The demo's policy: the default cascade, trained once on the bundled arm-log sample.

``searchagent/sample/armlog/`` holds 600 questions (100 of each of six benchmarks) of the
published Llama-3.1-8B-Instruct arm log in its own layout. The demo imports it into a
DuckDB file (``eval import-arms``), trains the default policy on it (``policy train``)
and keeps both in ``--policy-dir``, the same steps as docs/policies.md on the whole log.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from searchagent.errors import InputError
from searchagent.files import replaceable

SAMPLE_LOG = Path(__file__).resolve().parents[1] / "sample" / "armlog"
RUN = "llama31-8b-sample"
LABELS = {"stop": "stop", "single": "retrieve once", "multi": "multi-hop",
          "serve_closed_book": "serve closed book", "serve_single": "serve the retrieved",
          "escalate": "multi-hop", "serve_multi": "serve multi-hop"}


def ensure_demo_policy(folder: str | Path, lam: float, config_path: str | None) -> Path:
    """Train the policy into a missing or empty ``folder``; reuse the policy it holds;
    refuse anything else. Training happens in a hidden sibling renamed into place."""
    from eval.arm_import import import_arms
    from policies.persistence import LEFTOVERS, POLICY_FILE
    from searchagent.cli import build_parser
    from searchagent.cli.policy_cmd import run_train

    folder = Path(folder)
    if (folder / POLICY_FILE).is_file():
        print(f"using existing policy {folder}")
        return folder
    if not replaceable(folder, POLICY_FILE, LEFTOVERS):
        raise InputError("--policy-dir holds something other than a policy; remove it or "
                         "pick another folder", path=str(folder))
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.staging-", dir=folder.parent))
    try:
        db, trained = staging / "armlog.duckdb", staging / "policy"
        result = import_arms(SAMPLE_LOG / "test", SAMPLE_LOG / "questions.jsonl", db, RUN)
        print(f"imported {len(result.rows)} arm outcomes of Llama-3.1-8B-Instruct "
              f"({len(result.rows) // 3} sample questions x 3 strategies) into {db.name}")
        argv = ["policy", "train", "--log", str(db), "--lam", repr(lam), "--no-confidence",
                "--test-frac", "0", "--out", str(trained)]
        run_train(build_parser().parse_args(argv + (["--config", config_path]
                                                    if config_path else [])))
        os.rename(db, trained / db.name)
        if folder.exists():
            folder.rmdir()                      # empty, checked above
        os.rename(trained, folder)
        print(f"policy and arm log moved to {folder}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def describe_route(answer) -> str:
    """The policy's route for an ``auto`` answer and its first decision's values, e.g.
    closed book -> retrieve once -> serve closed book (after the closed-book answer, lambda
    0.1: stop 0.450, retrieve once 0.412, multi-hop 0.330)."""
    decision = next((s.detail for s in answer.trace if s.kind == "policy"), {})
    steps = decision.get("cascade") or []
    if not steps:
        return f"{decision.get('policy', 'policy')} chose {decision.get('arm', '?')}"
    first = ", ".join(f"{LABELS.get(a, a)} {v:.3f}"
                      for a, v in zip(steps[0]["actions"], steps[0]["values"]))
    route = " -> ".join(["closed book", *(LABELS.get(s["action"], s["action"]) for s in steps)])
    return f"{route} (after the closed-book answer, lambda {decision.get('lam')}: {first})"
