"""How often the closed-book and the one-retrieval answers agree, and who is right then.

Per dataset of an arm log (``arm_outcomes``): the share of questions whose two answers are
equal after answer normalization, closed book's EM where they agree, and each arm's EM where
they disagree: the per-question signal the answer cascade (``policies/cascade.py``) uses.

    .venv/bin/python benchmarks/answer_agreement.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from eval.metrics import normalize_answer  # noqa: E402
from policies.armlog import load_arm_log  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    args = parser.parse_args()
    table = load_arm_log(args.log)
    em = table.quality["em"]
    agree = np.array([normalize_answer(a[0]) == normalize_answer(a[1]) for a in table.answers])
    datasets = np.array([key[0] for key in table.keys])
    print("| dataset | questions | closed book = retrieved answer | closed book EM when they "
          "agree | ... when they disagree: closed book / retrieved / multi-hop |\n"
          "|---|---|---|---|---|")
    for name in ["all", *sorted(set(datasets))]:
        rows = np.ones(len(table), bool) if name == "all" else datasets == name
        same, other = rows & agree, rows & ~agree
        print(f"| {name} | {rows.sum()} | {same.sum() / rows.sum():.0%} | "
              f"{em[same, 0].mean():.3f} | "
              + " / ".join(f"{em[other, a].mean():.3f}" for a in range(3)) + " |")


if __name__ == "__main__":
    main()
