"""How good is the demo's policy? The cascade ``searchagent demo`` trains on the bundled
600-question arm-log sample, scored on the other 2,380 questions of the full Llama-3.1-8B
log (F1 reward, cost = retrieval calls), beside the best fixed arm and the oracle.

    .venv/bin/python benchmarks/demo_policy.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policies.persistence import load_policy  # noqa: E402
from policies.replay import load_replay_data  # noqa: E402
from policies.scoring import evaluate  # noqa: E402
from searchagent.cli.demo_policy import SAMPLE_LOG, ensure_demo_policy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb",
                        help="the full arm log (eval import-arms, see docs/policies.md)")
    parser.add_argument("--lams", default="0,0.02,0.05,0.1")
    args = parser.parse_args()
    with open(SAMPLE_LOG / "questions.jsonl", encoding="utf-8") as handle:
        sample = {(row["dataset"], row["qid"]) for row in map(json.loads, handle)}
    table, emb, _ = load_replay_data(args.log)
    rest = np.array([i for i, key in enumerate(table.keys) if tuple(key[-2:]) not in sample])
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_policy(ensure_demo_policy(Path(tmp) / "policy", 0.1, None))
    print(f"\nthe demo's policy (600 sample questions) on the other {len(rest)} questions\n\n"
          "| lambda | best fixed | demo policy | gap closed | calls | closed book / single / "
          "multi served | oracle |\n|---|---|---|---|---|---|---|")
    for lam in map(float, args.lams.split(",")):
        result = evaluate(bundle, table.subset(rest), emb[rest], lam)
        p = result["policy"]
        print(f"| {lam:g} | {result['best_fixed_reward']:.4f} | {p['reward']:.4f} | "
              f"{p['gap_closed']:.2f} | {p['steps']:.2f} | {p['share_parametric']:.2f} / "
              f"{p['share_single']:.2f} / {p['share_multi']:.2f} | "
              f"{result['references']['oracle']['reward']:.4f} |")


if __name__ == "__main__":
    main()
