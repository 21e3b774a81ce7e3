"""Check eval/metrics.py against an independent re-implementation of the answer part of
the official HotpotQA evaluation (hotpot_evaluate_v1.py), on stored run predictions.

Written from the script's documented behaviour, not from its code and not from
eval/metrics.py: lower-case; delete every character of ``string.punctuation``; replace the
articles a / an / the wherever they stand between regex word boundaries (so "the—end"
loses its "the": "—" is no punctuation there but is a boundary); split on white space. EM compares the token strings; F1 is the
token-multiset F1, forced to 0 when either side is one of yes / no / noanswer and the two
differ. With several gold aliases the best score counts (the SQuAD convention).

    python benchmarks/eval_official_check.py --db bench-out/eval.duckdb [--run R ...]

Prints, per dataset x system, the mean EM/F1 from the stored rows and from this
re-implementation, and the number of questions where they differ (expected: 0). It also
scores a built-in set of adversarial strings both ways.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from eval.metrics import exact_match, f1_score  # noqa: E402

_DROP = str.maketrans("", "", string.punctuation)
_ARTICLE_WORDS = re.compile(r"\b(?:the|an|a)\b")
_YES_NO = {"yes", "no", "noanswer"}


def official_tokens(text: str) -> list[str]:
    return _ARTICLE_WORDS.sub(" ", text.lower().translate(_DROP)).split()


def official_em(prediction: str, gold: str) -> float:
    return 1.0 if official_tokens(prediction) == official_tokens(gold) else 0.0


def official_f1(prediction: str, gold: str) -> float:
    pred, true = official_tokens(prediction), official_tokens(gold)
    pred_s, true_s = " ".join(pred), " ".join(true)
    if pred_s in _YES_NO and pred_s != true_s:
        return 0.0
    if true_s in _YES_NO and pred_s != true_s:
        return 0.0
    overlap = Counter(pred) & Counter(true)
    same = sum(overlap.values())
    if not same:
        return 0.0
    p, r = same / len(pred), same / len(true)
    return 2 * p * r / (p + r)


def best(fn, prediction: str, golds: list[str]) -> float:
    return max((fn(prediction, g) for g in golds), default=0.0)


ADVERSARIAL = [
    ("The Yes.", ["yes"]), ("yes, it is", ["yes"]), ("no", ["No!"]), ("No answer", ["noanswer"]),
    ("an apple", ["Apple"]), ("theatre", ["the atre"]), ("U.S.A.", ["USA"]),
    ("Chief of Protocol of the United States", ["Chief of Protocol"]),
    ("  Małgorzata   Braunek ", ["Małgorzata Braunek"]), ("1,000", ["1000"]),
    ("the the the", ["a an"]), ("", ["x"]), ("x", [""]), ("Hello—world", ["hello world"]),
    ("A-ha", ["aha", "A ha"]), ("16 July 1966", ["July 16, 1966", "16 July 1966"]),
    ("Tab\tand\nnewline", ["tab and newline"]), ("«Quoted»", ["quoted"]),
    ("the—end", ["—end"]), ("«the» end", ["« » end"]), ("Ångström", ["angstrom"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", action="append", help="limit to these runs")
    args = parser.parse_args()

    adv_diff = sum(abs(exact_match(p, g) - best(official_em, p, g)) > 1e-12
                   or abs(f1_score(p, g) - best(official_f1, p, g)) > 1e-12
                   for p, g in ADVERSARIAL)
    print(f"adversarial strings: {len(ADVERSARIAL)} scored, {adv_diff} differ")

    con = duckdb.connect(args.db, read_only=True)
    sources = [("results", "system"), ("arm_outcomes", "'arm:' || arm")]
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for table, system in sources:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name=?",
                           [table]).fetchone()[0]:
            continue
        where, params = "", []
        if args.run:
            where, params = f"WHERE run IN ({', '.join('?' * len(args.run))})", args.run
        for row in con.execute(f"SELECT run, dataset, {system}, prediction, golds, em, f1 "
                               f"FROM {table} {where}", params).fetchall():
            groups[row[:3]].append(row[3:])
    print("| run | dataset | system | n | EM (stored) | EM (official) | F1 (stored) | "
          "F1 (official) | questions differing |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    total_diff = 0
    for key in sorted(groups):
        rows = groups[key]
        ours_em = sum(r[2] for r in rows) / len(rows)
        ours_f1 = sum(r[3] for r in rows) / len(rows)
        off = [(best(official_em, r[0], json.loads(r[1])), best(official_f1, r[0], json.loads(r[1])))
               for r in rows]
        diff = sum(abs(o[0] - r[2]) > 1e-9 or abs(o[1] - r[3]) > 1e-9 for o, r in zip(off, rows))
        total_diff += diff
        print(f"| {' | '.join(key)} | {len(rows)} | {100 * ours_em:.2f} | "
              f"{100 * sum(o[0] for o in off) / len(rows):.2f} | {100 * ours_f1:.2f} | "
              f"{100 * sum(o[1] for o in off) / len(rows):.2f} | {diff} |")
    print(f"\n{sum(map(len, groups.values()))} stored predictions; {total_diff} differ")
    return 1 if total_diff or adv_diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
