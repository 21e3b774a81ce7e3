"""Do word-frequency (popularity) features tell the cascade when closed book fails?

The popularity of what a question asks about predicts whether a model knows it (Mallen et
al. 2023, "When Not to Trust Language Models"; Marina et al. 2025 use entity popularity and
frequency on these same questions). Without page views or a knowledge graph, the
frequency of a word in broad English text (the ``wordfreq`` package's Zipf scale, 0 for
unseen words up to 8 for "the") is the offline proxy. Per question: the rarest words of
the question, of its capitalized spans (entities) and of the closed-book answer, the
number of rare words and spans, and how much of the answer repeats the question (12
columns). Printed: per dataset, the correlation of three of them with the closed-book F1
and with the gain of one retrieval over it; then the cascade with and without them
(standardized on the training folds), 5-fold by id, F1 reward, beside the best fixed arm
and the dataset-name router.

    .venv/bin/pip install wordfreq        # not a dependency of searchagent
    .venv/bin/python benchmarks/cascade_popularity.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.cascade_dataset_signal import (  # noqa: E402
    compare_variants, held_out_cascade, load_log, train_scaled)

WORD = re.compile(r"[A-Za-z0-9][\w'\-]*")
COMMON = 6.0            # Zipf 6 and up: function words, left out; also the "none" value
COLUMNS = ("question: rarest word", "question: mean word", "question: mean of rarest 3",
           "question: words under Zipf 3", "rarest entity span", "mean entity span",
           "rarest entity word", "entity spans", "answer: rarest word", "answer: mean word",
           "answer: unseen words", "answer: share of words in the question")


def entity_spans(text: str) -> list[str]:
    """Runs of capitalized words after the first word."""
    spans, run = [], []
    for position, token in enumerate(text.split()):
        word = token.strip("?,.!;:\"'()")
        if position and word[:1].isupper():
            run.append(word)
        elif run:
            spans.append(" ".join(run))
            run = []
    return spans + ([" ".join(run)] if run else [])


def popularity_features(question: str, answer: str, zipf) -> list[float]:
    """The ``COLUMNS`` of one question and its closed-book answer."""
    words = [z for z in (zipf(w.lower()) for w in WORD.findall(question)) if z < COMMON]
    words = words or [COMMON]
    spans = entity_spans(question)
    span_z = [zipf(s) for s in spans] or [COMMON]
    span_words = [zipf(w.lower()) for s in spans for w in s.split()] or [COMMON]
    answer_words = [w.lower() for w in WORD.findall(answer)]
    answer_z = [z for z in (zipf(w) for w in answer_words) if z < 7.5] or [COMMON]
    asked = {w.lower() for w in WORD.findall(question)}
    return [min(words), float(np.mean(words)), float(np.mean(sorted(words)[:3])),
            float(sum(z < 3 for z in words)), min(span_z), float(np.mean(span_z)),
            min(span_words), float(len(spans)), min(answer_z), float(np.mean(answer_z)),
            float(sum(z == 0 for z in answer_z)),
            float(np.mean([w in asked for w in answer_words])) if answer_words else 0.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--lams", default="0,0.02,0.05,0.1")
    parser.add_argument("--seeds", type=int, default=2, help="fold assignments")
    args = parser.parse_args()
    try:
        from wordfreq import zipf_frequency
    except ImportError:
        sys.exit("this benchmark needs wordfreq: .venv/bin/pip install wordfreq")
    lams = [float(v) for v in args.lams.split(",")]
    table, emb, spec, names = load_log(args.log)
    Q = table.quality["f1"]

    def zipf(text: str) -> float:
        return zipf_frequency(text, "en")

    F = np.array([popularity_features(q, a[0], zipf)
                  for q, a in zip(table.questions, table.answers)])
    shown = (0, 4, 8)
    print("Correlation per dataset: with closed-book F1 / with single - closed-book F1\n")
    print("| dataset | " + " | ".join(COLUMNS[j] for j in shown) + " |\n|" + "---|" * 4)
    for dataset in np.unique(names):
        rows = names == dataset

        def corr(j: int, target: np.ndarray) -> str:
            column = F[rows, j]
            return f"{np.corrcoef(column, target)[0, 1]:+.3f}" if column.std() else "-"

        print(f"| {dataset} | " + " | ".join(
            f"{corr(j, Q[rows, 0])} / {corr(j, Q[rows, 1] - Q[rows, 0])}" for j in shown)
            + " |")
    variants = ("question + answers", "+ popularity")

    def held_out(variant, train, test, X):
        Xv = X if variant == variants[0] else np.hstack([X, train_scaled(F, train)])
        return held_out_cascade(table, Xv, train, test, lams, emb.shape[1])

    compare_variants(table, spec, emb, names, lams, args.seeds, variants, held_out)

if __name__ == "__main__":
    main()
