"""Tables (markdown) and the recall/latency plot for ``benchmarks/ann.py`` results."""

from __future__ import annotations

from pathlib import Path

MB = 1e6


def _setting(row: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in row["setting"].items()) or "exact"


def at_recall(system: dict, mode: str, target: float = 0.95) -> dict | None:
    """The lowest-p50 row of ``mode`` reaching ``target`` recall@10."""
    rows = [r for r in system["rows"] if r["mode"] == mode and r["recall"] >= target]
    return min(rows, key=lambda r: r["p50_ms"]) if rows else None


def tables(results: dict) -> str:
    out = []
    for name, entry in results.items():
        if "systems" not in entry:
            continue
        out.append(f"### {name}: {entry['n']:,} x {entry['dim']}, {entry['queries']} queries, "
                   f"{entry.get('machine', '')}\n")
        out.append("| system | build s | disk MB | RSS loaded MB | own accounting MB | "
                   "p50 ms @R>=0.95 warm | p50 ms @R>=0.95 cold |")
        out.append("|---|---|---|---|---|---|---|")
        for system, s in entry["systems"].items():
            warm, cold = at_recall(s, "warm"), at_recall(s, "cold")
            own = s.get("own_memory_bytes")
            own_mb = f"{own / MB:.1f}" if own else "-"
            out.append(f"| {system} | {s['build_seconds']:.0f} | {s['bytes_on_disk'] / MB:.0f} | "
                       f"{s['rss_load_bytes'] / MB:.0f} | {own_mb} | "
                       f"{_fmt(warm)} | {_fmt(cold)} |")
        out.append("")
        out.append("| system | mode | setting | recall@10 | p50 ms | p99 ms | QPS (2 threads) | "
                   "postings | KB read | io ms | compute ms |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for system, s in entry["systems"].items():
            for r in s["rows"]:
                qps = f"{r['qps_2threads']:.0f}" if "qps_2threads" in r else ""
                extra = ["", "", "", ""]
                if "mean_postings_read" in r:
                    extra = [f"{r['mean_postings_read']:.1f}", f"{r['mean_bytes_read'] / 1e3:.0f}",
                             f"{r['mean_io_seconds'] * 1e3:.2f}",
                             f"{r['mean_compute_seconds'] * 1e3:.2f}"]
                out.append(f"| {system} | {r['mode']} | {_setting(r)} | {r['recall']:.3f} | "
                           f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {qps} | {' | '.join(extra)} |")
        cold = {r.get("cold_method") for s in entry["systems"].values() for r in s["rows"]
                if r["mode"] == "cold"}
        if cold:
            out.append(f"\nCold methods: {'; '.join(sorted(filter(None, cold)))}\n")
        out.append("")
    out.append(scaling(results))
    return "\n".join(out) + "\n"


def _fmt(row: dict | None) -> str:
    return f"{row['p50_ms']:.2f} ({_setting(row)}, R={row['recall']:.3f})" if row else "not reached"


def scaling(results: dict) -> str:
    names = [n for n in ("syn100k", "syn1m", "syn2m") if "systems" in results.get(n, {})]
    if not names:
        return ""
    lines = ["### Growth with n (synthetic, dim 384)\n",
             "| dataset | system | build s | RSS loaded MB | disk MB | p50 ms @R>=0.95 warm |",
             "|---|---|---|---|---|---|"]
    for name in names:
        for system, s in results[name]["systems"].items():
            warm = at_recall(s, "warm")
            lines.append(f"| {name} | {system} | {s['build_seconds']:.0f} | "
                         f"{s['rss_load_bytes'] / MB:.0f} | {s['bytes_on_disk'] / MB:.0f} | "
                         f"{warm['p50_ms']:.2f} |" if warm else
                         f"| {name} | {system} | {s['build_seconds']:.0f} | "
                         f"{s['rss_load_bytes'] / MB:.0f} | {s['bytes_on_disk'] / MB:.0f} | - |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in results.items() if "systems" in e]
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for system, s in results[name]["systems"].items():
            for mode, style in (("warm", "-o"), ("cold", "--x")):
                rows = [r for r in s["rows"] if r["mode"] == mode]
                if rows:
                    ax.plot([r["p50_ms"] for r in rows], [r["recall"] for r in rows], style,
                            label=f"{system} {mode}", markersize=4)
        ax.set_xscale("log")
        ax.set_xlabel("single-thread p50 latency (ms, log)")
        ax.set_ylabel("recall@10")
        ax.axhline(0.95, color="grey", linewidth=0.5)
        ax.set_title(f"{name} (n={results[name]['n']:,})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
