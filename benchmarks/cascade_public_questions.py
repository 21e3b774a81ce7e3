"""Does a dataset reader trained on 35,000 more public questions close the gap to the
dataset-name router (issue 14)?

The text classifiers of ``cascade_dataset_signal.py`` and ``dataset_classifier.py`` learn
the six datasets from the ~2,400 training-fold questions of the arm log. The shared data
holds the same benchmarks' public question lists (``SOURCES.md``: HotpotQA, 2Wiki, SQuAD,
MuSiQue and NQ dev sets, a TriviaQA sample), most of them not in the arm log. This script
trains the same TF-IDF logistic classifier on those questions (every arm-log question
removed, at most ``--cap`` per dataset, classes balanced), alone (``public``) and with the
training folds' questions added (``public + folds``), and per held-out question (5-fold by
id, one fold assignment) compares, at each lambda (F1 reward, gap to the oracle closed):

- the router on each classifier's guess (the expected reward under its probabilities);
- the cascade with each classifier's probabilities as features;
- a gated cascade: trained with the true dataset as a feature (privileged, training rows
  only), served with each step's values averaged over the datasets, weighted by the
  classifier's probabilities (and, as the ceiling, with the true dataset).

    .venv/bin/python benchmarks/cascade_public_questions.py --log bench-out/armlogs.duckdb \
        --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.cascade_dataset_signal import (  # noqa: E402
    fold_features, gap_cell, load_log, question_vectorizer, router_on_guess, trained_cascade)
from benchmarks.policy_armlogs import router_arms  # noqa: E402
from policies.armlog import kfold_by_id  # noqa: E402
from policies.cascade import AnswerCascade  # noqa: E402

HONESTY = "Trustworthy-Information-Access__Annotation-Efficient-Universal-Honesty-Alignment"
SOURCES = {   # arm-log dataset name -> files under the data folder (field "question")
    "hotpotqa": [f"hotpotqa/{HONESTY}/dev.jsonl", "hotpotqa/megagonlabs__RPT/dev.jsonl",
                 "hotpotqa/megagonlabs__RPT/train.jsonl"],
    "2wikimultihopqa": [f"2wikimultihopqa/{HONESTY}/dev.jsonl"],
    "squad": [f"squad/{HONESTY}/dev.jsonl"],
    "musique": ["musique/peterbaile__lag/dev.json"],
    "nq": ["nq/Sabbat509__nq-open-tp-crag/nq_open_test.jsonl"],
    "trivia": ["triviaqa/IBM__BenchDrift/test_sampled_1000.jsonl"],
}


def normalized(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower())


def public_questions(data: Path, exclude, cap: int, seed: int = 0) -> tuple[list, list]:
    """Questions and dataset names from the public lists, without any of ``exclude``."""
    skip, rng = {normalized(q) for q in exclude}, np.random.default_rng(seed)
    texts, labels = [], []
    for name, files in SOURCES.items():
        found = []
        for file in files:
            raw = (data / file).read_text()
            rows = json.loads(raw) if file.endswith(".json") else [
                json.loads(line) for line in raw.splitlines() if line.strip()]
            found += [row["question"] for row in rows if normalized(row["question"]) not in skip]
        found = list(dict.fromkeys(found))
        rng.shuffle(found)
        texts += found[:cap]
        labels += [name] * len(found[:cap])
    return texts, labels


def classifier_probabilities(texts, labels, weights, questions) -> np.ndarray:
    """P(dataset | question) for ``questions`` from TF-IDF logistic regression."""
    from sklearn.linear_model import LogisticRegression

    vectorizer = question_vectorizer()
    clf = LogisticRegression(C=10.0, max_iter=3000, class_weight="balanced")
    clf.fit(vectorizer.fit_transform(texts), labels, sample_weight=weights)
    return clf.predict_proba(vectorizer.transform(questions))


class GatedCascade:
    """A cascade trained with the dataset one-hot, serving each step's values averaged over
    the datasets with weights ``P`` (rows: questions)."""

    def __init__(self, cascade: AnswerCascade, P: np.ndarray):
        self.cascade, self.P = cascade, P

    def _values(self, step, X, questions, answers, lam):
        total = 0.0
        for d in range(self.P.shape[1]):
            hot = np.zeros((len(X), self.P.shape[1]))
            hot[:, d] = 3.0
            total = total + self.P[:, [d]] * self.cascade._values(
                step, np.hstack([X, hot]), questions, answers, lam)
        return total

    def routes(self, *args):
        return AnswerCascade.routes(self, *args)

    def route_choices(self, *args):
        return AnswerCascade.route_choices(self, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--data", default="../shared/data", type=Path)
    parser.add_argument("--lams", default="0.05,0.1")
    parser.add_argument("--cap", type=int, default=4000, help="public questions per dataset")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment")
    args = parser.parse_args()
    lams = [float(v) for v in args.lams.split(",")]
    table, emb, spec, names = load_log(args.log)
    datasets, n = np.unique(names), len(table)
    onehot = 3.0 * (names[:, None] == datasets[None, :])
    texts, labels = public_questions(args.data, table.questions, args.cap)
    splits = kfold_by_id(table.keys, 5, seed=args.seed)
    guesses = {"public": classifier_probabilities(texts, labels, None, table.questions),
               "public + folds": np.zeros((n, len(datasets)))}
    for train, test in splits:
        guesses["public + folds"][test] = classifier_probabilities(
            texts + [table.questions[i] for i in train], labels + list(names[train]),
            np.r_[np.ones(len(texts)), np.full(len(train), 3.0)],
            [table.questions[i] for i in test])
    counts = ", ".join(f"{d} {labels.count(d)}" for d in datasets)
    print(f"{len(texts)} public questions ({counts})"
          "\n\n| classifier | accuracy on the arm log | TriviaQA recall | TriviaQA taken for "
          "HotpotQA / SQuAD |\n|---|---|---|---|")
    trivia = names == "trivia"
    for name, P in guesses.items():
        guessed = datasets[P.argmax(axis=1)]
        taken = guessed[trivia]
        print(f"| {name} | {(guessed == names).mean():.3f} | {(taken == 'trivia').mean():.3f} | "
              f"{(taken == 'hotpotqa').sum()} / {(taken == 'squad').sum()} |")
    Q, C = table.quality["f1"], table.steps
    columns = [f"{kind} {g}" for kind in ("router on", "cascade +", "gated cascade on")
               for g in guesses] + ["gated cascade on the true dataset (privileged)"]
    rewards = {(c, lam): np.zeros(n) for c in columns for lam in lams}
    for train, test in splits:
        X = fold_features(table, spec, emb, train)
        rows = (X[test], [table.questions[i] for i in test], [table.answers[i] for i in test],
                C[test])
        gated = trained_cascade(table, np.hstack([X, onehot]), train, lams, emb.shape[1])
        cascades = {f"cascade + {g}": (trained_cascade(table, np.hstack([X, 3.0 * P]), train,
                                                       lams, emb.shape[1]), 3.0 * P[test])
                    for g, P in guesses.items()}
        for g, P in [*guesses.items(), ("the true dataset (privileged)", onehot / 3.0)]:
            cascades[f"gated cascade on {g}"] = (GatedCascade(gated, P[test]), None)
        for column, (policy, extra) in cascades.items():
            Xt = rows[0] if extra is None else np.hstack([rows[0], extra])
            for lam in lams:
                served, spent = policy.routes(Xt, *rows[1:], lam)
                rewards[column, lam][test] = Q[test, served] - lam * spent
        print(f"fold done ({len(test)} questions)", file=sys.stderr, flush=True)
    print("\nF1 reward (gap to the oracle closed)\n\n| lambda | best fixed | router (knows "
          "the dataset) | " + " | ".join(columns) + " |\n|" + "---|" * (3 + len(columns)))
    for lam in lams:
        R = Q - lam * C
        fixed, oracle = R.mean(axis=0).max(), R.max(axis=1).mean()
        for g, P in guesses.items():
            rewards[f"router on {g}", lam] = router_on_guess(R, names, P, splits)[1]
        router = R[np.arange(n), router_arms(splits, names, R)]
        print(f"| {lam:g} | {fixed:.4f} | {gap_cell(router, fixed, oracle)} | " + " | ".join(
            gap_cell(rewards[c, lam], fixed, oracle) for c in columns) + " |", flush=True)


if __name__ == "__main__":
    main()
