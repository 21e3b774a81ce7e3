"""Does a small language model's judgement of the answers tell the cascade more?

The Llama-3.1-8B log has no token probabilities, so the cascade cannot see the generator's
confidence. A stand-in any deployment has: the bundled SmolLM2-135M-Instruct scores each
answer as a continuation of ``Question: ...\\nAnswer:`` (mean, sum, first and lowest token
log-probability, length in tokens) and against the same answer with no question (mean and
sum of the difference: how much the question raises it, a pointwise mutual information);
also the question's own mean, lowest and lowest-3 token log-probabilities (how familiar its
words are to a small model). Printed: per dataset, the correlation of the closed-book
answer's mean log-probability and PMI with closed book's F1 and with the gain of one
retrieval; then the cascade (5-fold by id, F1 reward) as it is, with the question's scores
added to its question features, and with each answer's scores added to that answer's
features at the step where the answer exists. Scoring takes about 25 minutes on 2 cores
and is cached (``--scores``).

    .venv/bin/python benchmarks/cascade_lm_scores.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import policies.cascade  # noqa: E402
from benchmarks.cascade_dataset_signal import (  # noqa: E402
    compare_variants, held_out_cascade, load_log, train_scaled)

ANSWER_COLUMNS = ("mean", "sum", "first", "lowest", "tokens", "PMI mean", "PMI sum")
VARIANTS = ("as it is", "+ question scores", "+ answer scores")


class Scorer:
    """Token log-probabilities under a GGUF model (llama-cpp-python)."""

    def __init__(self):
        from llama_cpp import Llama

        from searchagent.models import gguf_path
        threads = os.cpu_count() or 1
        self.llm = Llama(model_path=gguf_path(), n_ctx=512, n_threads=threads,
                         n_threads_batch=threads, logits_all=True, verbose=False)

    def logprobs(self, parts: list[str]) -> list[np.ndarray]:
        """Log-probability of each token of each part of the concatenated text (the first
        token of the text has none)."""
        tokens, spans = [], []
        for k, part in enumerate(parts):
            ids = self.llm.tokenize(part.encode(), add_bos=k == 0, special=False)
            spans.append((len(tokens), len(tokens) + len(ids)))
            tokens += ids
        tokens = tokens[:500]
        self.llm.reset()
        self.llm.eval(tokens)
        logits = np.asarray(self.llm.scores[:len(tokens)], np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        each = logp[np.arange(len(tokens) - 1), tokens[1:]]
        return [each[max(a, 1) - 1:min(b, len(tokens)) - 1] for a, b in spans]

    def score(self, question: str, answers: list[str]) -> tuple[list[float], list[list[float]]]:
        """The question's 3 scores and each answer's ``ANSWER_COLUMNS``."""
        asked = None
        per_answer = []
        for answer in answers:
            answer = " ".join(((answer or "").strip() or "none").split()[:40])
            _, q, _, a = self.logprobs(["Question:", " " + question.strip(), "\nAnswer:",
                                        " " + answer])
            _, alone = self.logprobs(["Answer:", " " + answer])
            asked = q if len(q) else np.zeros(1)
            per_answer.append([a.mean(), a.sum(), a[0], a.min(), len(a),
                               a.mean() - alone.mean(), a.sum() - alone.sum()])
        return [asked.mean(), asked.min(), np.sort(asked)[:3].mean()], per_answer


def load_scores(path: Path, table) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) question scores and (n, 3 arms, 7) answer scores, computed once."""
    if path.exists():
        cached = np.load(path)
        if len(cached["question"]) == len(table):
            return cached["question"], cached["answers"]
    scorer, question, answers = Scorer(), [], []
    for q, arms in tqdm(list(zip(table.questions, table.answers)), desc="scoring"):
        asked, each = scorer.score(q, list(arms))
        question.append(asked)
        answers.append(each)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, question=np.array(question), answers=np.array(answers))
    return np.array(question), np.array(answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--scores", default="bench-out/lm_scores.npz", type=Path)
    parser.add_argument("--lams", default="0.02,0.05,0.1")
    parser.add_argument("--seeds", type=int, default=2, help="fold assignments")
    args = parser.parse_args()
    lams = [float(v) for v in args.lams.split(",")]
    table, emb, spec, names = load_log(args.log)
    Q = table.quality["f1"]
    asked, scored = load_scores(args.scores, table)
    print("Closed-book answer, correlation per dataset: with closed-book F1 / with single - "
          "closed-book F1\n\n| dataset | mean log-probability | PMI mean |\n|---|---|---|")
    for dataset in np.unique(names):
        rows = names == dataset
        print(f"| {dataset} | " + " | ".join(
            f"{np.corrcoef(scored[rows, 0, j], Q[rows, 0])[0, 1]:+.2f} / "
            f"{np.corrcoef(scored[rows, 0, j], Q[rows, 1] - Q[rows, 0])[0, 1]:+.2f}"
            for j in (0, 5)) + " |")
    row_of = {}                  # (question, first k answers) -> row, for the answer scores
    for i, (q, arms) in enumerate(zip(table.questions, table.answers)):
        for k in range(1, 4):
            row_of[q, tuple(arms[:k])] = i
    plain_features, plain_count = policies.cascade.answer_features, policies.cascade.feature_count

    def scored_features(scale: np.ndarray, question: str, answers,
                        confidence: bool = False) -> list[float]:
        i = row_of[question, tuple(answers)]
        return list(plain_features(question, answers, confidence)) + \
            list(scale[i, :len(answers)].ravel())

    def held_out(variant, train, test, X):
        Xv = np.hstack([X, train_scaled(asked, train)]) if variant == VARIANTS[1] else X
        patch = variant == VARIANTS[2]
        with mock.patch.object(policies.cascade, "answer_features",
                               partial(scored_features, train_scaled(scored, train))
                               if patch else plain_features), \
                mock.patch.object(policies.cascade, "feature_count",
                                  lambda k, confidence=False:
                                  plain_count(k, confidence) + patch * 7 * k):
            return held_out_cascade(table, Xv, train, test, lams, emb.shape[1])

    compare_variants(table, spec, emb, names, lams, args.seeds, VARIANTS, held_out)

if __name__ == "__main__":
    main()
