"""Tables, target checks and the plot of ``benchmarks/churn.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import table

VARIANTS = (("lire", "(a) LIRE"), ("append", "(b) append-only"))


def report(result: dict) -> str:
    rounds, rebuild = result["rounds"], result["rebuild"]
    headers = ["round", "live"]
    for _, label in VARIANTS:
        headers += [f"{label} recall", "p50 ms", "p99 ms", "postings/q", "len p99/max",
                    "disk MB", "inserts/s", "splits"]
    rows = []
    for entry in rounds:
        row = [entry["round"], entry["live"]]
        for key, _ in VARIANTS:
            s = entry[key]
            row += [s["recall"], s["p50_ms"], s["p99_ms"], s["postings_per_query"],
                    f"{s['len_p99']}/{s['len_max']}", s["disk_mb"],
                    s.get("inserts_per_s", "-"), s.get("splits", "-")]
        rows.append(row)
    rows.append(["rebuild", rounds[-1]["live"], rebuild["recall"], rebuild["p50_ms"],
                 rebuild["p99_ms"], rebuild["postings_per_query"],
                 f"{rebuild['len_p99']}/{rebuild['len_max']}", rebuild["disk_mb"],
                 f"build {rebuild['build_s']} s", "-"] + ["-"] * 8)
    first, last = rounds[0], rounds[-1]
    lire, append = last["lire"], last["append"]
    speeds = [e["lire"]["inserts_per_s"] for e in rounds[1:]]
    with_commit = [e["lire"]["with_commit_per_s"] for e in rounds[1:]]
    side = result.get("side_by_side")
    if side:      # measured side by side at the end: other load moves per-round numbers
        p99_ratio = side["(a) LIRE"]["p99_ms"] / side["build (round 0)"]["p99_ms"]
    else:
        p99_ratio = lire["p99_ms"] / first["lire"]["p99_ms"]
    checks = [
        ("recall@10 of (a) within 1 point of the rebuild",
         f"{lire['recall']:.4f} vs {rebuild['recall']:.4f}",
         lire["recall"] >= rebuild["recall"] - 0.01),
        ("p99 of (a) within 20% of round 0", f"{p99_ratio:.2f}x", p99_ratio <= 1.2),
        ("(b) measurably worse than (a): recall 0.5 pt lower, p99 10% higher or its longest "
         "posting 10% longer",
         f"recall {append['recall']:.4f} vs {lire['recall']:.4f}, p99 {append['p99_ms']} vs "
         f"{lire['p99_ms']} ms, longest posting {append['len_max']} vs {lire['len_max']}",
         append["recall"] <= lire["recall"] - 0.005 or append["p99_ms"] >= 1.1 * lire["p99_ms"]
         or append["len_max"] >= 1.1 * lire["len_max"]),
        ("(a) inserts >= 2,000 vectors/s (median over rounds)",
         f"{np.median(speeds):,.0f}/s ({np.median(with_commit):,.0f}/s with commit)",
         np.median(speeds) >= 2000),
    ]
    if side:
        rows_side = [[name, s["p50_ms"], s["p99_ms"]] for name, s in side.items()]
        extra = ["", "Warm latency side by side at the end (each index warmed then timed in turn, twice; medians over passes):",
                 "", table(["index", "p50 ms", "p99 ms"], rows_side)]
    else:
        extra = []
    lines = [f"n = {result['n']:,} x {result['dim']}, {len(rounds) - 1} rounds of "
             f"{result['per_round']:,} deletes + {result['per_round']:,} inserts; build "
             f"{result['build_s']} s; search settings "
             f"{result.get('search', {'max_postings': result['args']['max_postings']})}",
             "", table(headers, rows), *extra, "",
             table(["target", "measured", "met"], [[n, m, "yes" if ok else "NO"]
                                                  for n, m, ok in checks])]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [e["round"] for e in result["rounds"]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in VARIANTS:
        axes[0].plot(rounds, [e[key]["recall"] for e in result["rounds"]], marker="o",
                     label=label)
        axes[1].plot(rounds, [e[key]["p99_ms"] for e in result["rounds"]], marker="o",
                     label=label)
        axes[2].plot(rounds, [e[key]["len_max"] for e in result["rounds"]], marker="o",
                     label=label)
    axes[0].axhline(result["rebuild"]["recall"], color="grey", ls="--", label="(c) rebuild")
    axes[1].axhline(result["rebuild"]["p99_ms"], color="grey", ls="--", label="(c) rebuild")
    for ax, title in zip(axes, ("recall@10", "p99 latency (ms, warm)", "longest posting")):
        ax.set_xlabel("round (1% deletes + 1% inserts each)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
