"""PNG plots for reports: quality vs cost (the Pareto view) and per-arm breakdowns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from searchagent.strategies.base import ARMS  # noqa: E402

if TYPE_CHECKING:
    from eval.report import SystemSummary


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both lower cost (x) and higher quality (y)."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def quality_plots(table: list["SystemSummary"], out: Path) -> list[Path]:
    """Per dataset: EM and F1 against steps and against seconds per question."""
    paths, used = [], set()
    for dataset in sorted({s.dataset for s in table}):
        rows = [s for s in table if s.dataset == dataset]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, (cost, label) in zip(axes, (("steps", "retrieval steps per question"),
                                            ("seconds", "seconds per question"))):
            shown = [s for s in rows if getattr(s, cost) is not None]   # cost not recorded
            for metric, marker in (("em", "o"), ("f1", "s")):
                xs = [getattr(s, cost) for s in shown]
                ys = [100 * getattr(s, metric).mean for s in shown]
                ax.scatter(xs, ys, marker=marker, label=metric.upper())
                front = pareto_front(list(zip(xs, ys)))
                ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--",
                        linewidth=1)
                if metric == "em":
                    for s, x, y in zip(shown, xs, ys):
                        ax.annotate(s.system, (x, y), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
            ax.set_xlabel(label)
            ax.set_ylabel("score (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{dataset}: quality vs cost (dashed: Pareto front)")
        fig.tight_layout()
        name, n = f"quality_{_slug(dataset)}", 1
        while name.lower() in used:      # 'x.y' and 'x_y' (or 'X') would share a file
            n += 1
            name = f"quality_{_slug(dataset)}-{n}"
        used.add(name.lower())
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def arm_plot(table: list["SystemSummary"], out: Path) -> list[Path]:
    """Stacked bars: the share of questions each system answered with each arm."""
    if not table:
        return []
    labels = [f"{s.dataset}\n{s.system}" for s in table]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(table) + 2), 4.5))
    bottom = [0.0] * len(table)
    arms = list(ARMS) + sorted({a for s in table for a in s.arms} - set(ARMS))
    for arm in arms:
        shares = [100 * s.arms.get(arm, 0) / s.n for s in table]
        if any(shares):
            ax.bar(range(len(table)), shares, bottom=bottom, label=arm)
            bottom = [b + v for b, v in zip(bottom, shares)]
    ax.set_xticks(range(len(table)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("questions (%)")
    ax.set_title("arm used per question")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "arms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
