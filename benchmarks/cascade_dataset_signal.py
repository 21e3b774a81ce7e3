"""What the dataset-name router knows that the cascade does not: the cascade given its
question features, plus a predicted dataset, plus the true dataset (privileged).

The router beats the cascade when retrieval is dear (lambda 0.05, 0.1), where the first
decision, made before any retrieved answer exists, matters most. Per held-out question
(5-fold by id), the cascade is trained on the training folds with (a) its question and
answer features, (b) those plus the probabilities of a text classifier of the question's
dataset (TF-IDF of character 1-4-grams and word 1-2-grams plus the MiniLM embedding,
logistic regression, trained on the training folds' dataset names; cross-fitted there so
training sees the same noise as serving), (c) those plus the true dataset as a one-hot
(what the router knows). Printed: the classifier's held-out accuracy and, per lambda, the
F1 reward and gap to the oracle closed of each beside the router, the router on the
classifier's guess (the training folds' best arm of the likeliest dataset, and of the
expected reward under the classifier's probabilities: what a question-text router can
know of the dataset) and the best fixed arm. Then the cascade's (a) first decision per
dataset: the advantage of retrieving once over stopping that it predicts against the one
realized, and the reward if that decision's threshold were shifted.

    .venv/bin/python benchmarks/cascade_dataset_signal.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.policy_armlogs import router_arms  # noqa: E402
from policies.armlog import kfold_by_id  # noqa: E402
from policies.cascade import AnswerCascade  # noqa: E402
from policies.features import FeatureMap, FeatureSpec  # noqa: E402
from policies.replay import load_replay_data  # noqa: E402

VARIANTS = ("question + answers", "+ predicted dataset", "+ true dataset (privileged)")


def question_vectorizer():
    """TF-IDF of a question's character 1-4-grams and word 1-2-grams, case kept."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), lowercase=False,
                        sublinear_tf=True, min_df=2),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=False,
                        sublinear_tf=True, min_df=2, token_pattern=r"\S+"))


def dataset_probabilities(questions, emb, names, train, test) -> np.ndarray:
    """P(dataset | question text) for every row: cross-fitted on ``train``, fitted on all of
    ``train`` for ``test``."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    text = question_vectorizer()
    text.fit(np.asarray(questions, object)[train])
    T = sparse.hstack([text.transform(questions), sparse.csr_matrix(emb)]).tocsr()
    clf = LogisticRegression(C=10.0, max_iter=3000)
    P = np.zeros((len(questions), len(set(names))))
    P[train] = cross_val_predict(clf, T[train], names[train], cv=3, method="predict_proba")
    P[test] = clf.fit(T[train], names[train]).predict_proba(T[test])
    return P


def fold_features(table, spec, emb, train) -> np.ndarray:
    """The question features of every row, fitted on the rows ``train``."""
    return FeatureMap.fit(spec, emb[train], [table.questions[i] for i in train]).transform(
        emb, table.questions)


def train_scaled(F: np.ndarray, train) -> np.ndarray:
    """``F`` standardized with the mean and spread of the rows ``train``."""
    return (F - F[train].mean(axis=0)) / (F[train].std(axis=0) + 1e-9)


def trained_cascade(table, X: np.ndarray, train, lams, embed_dims: int) -> AnswerCascade:
    """The cascade on features ``X``, trained on the rows ``train`` (F1 quality)."""
    cascade = AnswerCascade(X.shape[1], embed_dims=embed_dims, lam_grid=lams)
    cascade.fit_log(X[train], [table.questions[i] for i in train],
                    [table.answers[i] for i in train], table.quality["f1"][train],
                    table.steps[train])
    return cascade


def held_out_cascade(table, X: np.ndarray, train, test, lams, embed_dims: int,
                     cascade: AnswerCascade | None = None) -> dict[float, np.ndarray]:
    """The cascade on features ``X``, trained on ``train`` (or ``cascade``): each lambda's F1
    reward on ``test``."""
    Q, C = table.quality["f1"], table.steps
    cascade = cascade or trained_cascade(table, X, train, lams, embed_dims)
    rewards = {}
    for lam in lams:
        served, spent = cascade.routes(X[test], [table.questions[i] for i in test],
                                       [table.answers[i] for i in test], C[test], lam)
        rewards[lam] = Q[test, served] - lam * spent
    return rewards


def retrieve_once_advantage(table, cascade: AnswerCascade, X: np.ndarray, test, lam: float
                            ) -> tuple[np.ndarray, np.ndarray]:
    """On ``test``: the first decision's predicted advantage of retrieving once over
    stopping, and the realized one (the F1 reward of the route step 2 and 3 then take,
    minus closed book's)."""
    Q, C = table.quality["f1"][test], table.steps[test]
    questions = [table.questions[i] for i in test]
    answers = [table.answers[i] for i in test]
    first = cascade._values(0, X[test], questions, answers, lam)
    second, third = (np.argmax(cascade._values(k, X[test], questions, answers, lam), axis=1)
                     for k in (1, 2))
    served = np.where(second < 2, second, third)
    spent = np.where(second < 2, C[:, 0] + C[:, 1], C.sum(axis=1))
    realized = Q[np.arange(len(test)), served] - lam * spent - (Q[:, 0] - lam * C[:, 0])
    return first[:, 1] - first[:, 0], realized


def gap_cell(values: np.ndarray, fixed: float, oracle: float) -> str:
    """Mean reward and the share of the best-fixed -> oracle gap it closes."""
    return f"{values.mean():.4f} ({(values.mean() - fixed) / (oracle - fixed):.0%})"


def load_log(path: str):
    """The arm log, its question embeddings, the cascade's feature spec and each row's
    dataset name."""
    table, emb, embedder = load_replay_data(path)
    spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], confidence=False,
                       cues=True, standardize=True)
    return table, emb, spec, np.array([key[0] for key in table.keys])


def print_seed_header(variants) -> None:
    print("\n| fold seed | lambda | best fixed | router (knows the dataset) | "
          + " | ".join(f"cascade: {v}" for v in variants) + " |\n|"
          + "---|" * (4 + len(variants)))


def print_seed_rows(seed: int, lams, table, names, splits, rewards: dict, variants) -> None:
    """One table row per lambda: best fixed arm, the router and each variant's F1 reward
    (``rewards[variant, lam]``, per question) with the gap to the oracle closed."""
    Q, C, n = table.quality["f1"], table.steps, len(table)
    for lam in lams:
        R = Q - lam * C
        fixed, oracle = R.mean(axis=0).max(), R.max(axis=1).mean()
        cells = [R[np.arange(n), router_arms(splits, names, R)]] + [
            rewards[v, lam] for v in variants]
        print(f"| {seed} | {lam:g} | {fixed:.4f} | "
              + " | ".join(gap_cell(c, fixed, oracle) for c in cells) + " |", flush=True)


def compare_variants(table, spec, emb, names, lams, seeds: int, variants, held_out) -> None:
    """For each fold seed, the table rows of ``print_seed_rows``: ``held_out(variant, train,
    test, X)`` returns a variant's {lambda: F1 reward on ``test``}, given the question
    features ``X`` fitted on ``train``."""
    print_seed_header(variants)
    for seed in range(seeds):
        rewards = {(v, lam): np.zeros(len(table)) for v in variants for lam in lams}
        splits = kfold_by_id(table.keys, 5, seed=seed)
        for train, test in splits:
            X = fold_features(table, spec, emb, train)
            for variant in variants:
                for lam, values in held_out(variant, train, test, X).items():
                    rewards[variant, lam][test] = values
        print_seed_rows(seed, lams, table, names, splits, rewards, variants)


def router_on_guess(R: np.ndarray, names: np.ndarray, guess: np.ndarray, splits):
    """Per question, the reward of the router run on a guessed dataset: the training folds'
    best arm of the likeliest dataset, and of the expected reward under ``guess`` (rows of
    P(dataset), columns in ``np.unique(names)`` order)."""
    likeliest, expected = np.zeros(len(R)), np.zeros(len(R))
    for train, test in splits:          # each dataset's mean reward per arm, training folds
        means = np.stack([R[train][names[train] == d].mean(axis=0) for d in np.unique(names)])
        likeliest[test] = R[test, means[guess[test].argmax(axis=1)].argmax(axis=1)]
        expected[test] = R[test, (guess[test] @ means).argmax(axis=1)]
    return likeliest, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--lams", default="0.05,0.1")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment")
    args = parser.parse_args()
    lams = [float(v) for v in args.lams.split(",")]
    table, emb, spec, names = load_log(args.log)
    onehot = 3.0 * (names[:, None] == np.unique(names)[None, :])
    Q, C, n = table.quality["f1"], table.steps, len(table)
    rewards = {(v, lam): np.zeros(n) for v in VARIANTS for lam in lams}
    predicted, realized = ({lam: np.zeros(n) for lam in lams} for _ in range(2))
    correct, guess = 0, np.zeros((n, len(np.unique(names))))
    splits = kfold_by_id(table.keys, 5, seed=args.seed)
    for train, test in splits:
        X = fold_features(table, spec, emb, train)
        P = dataset_probabilities(table.questions, emb, names, train, test)
        guess[test] = P[test]
        correct += int((np.unique(names)[P[test].argmax(axis=1)] == names[test]).sum())
        inputs = dict(zip(VARIANTS, (X, np.hstack([X, 3.0 * P]), np.hstack([X, onehot]))))
        for variant, Xv in inputs.items():
            cascade = trained_cascade(table, Xv, train, lams, emb.shape[1])
            for lam, values in held_out_cascade(table, Xv, train, test, lams, emb.shape[1],
                                                cascade).items():
                rewards[variant, lam][test] = values
                if variant == VARIANTS[0]:
                    predicted[lam][test], realized[lam][test] = retrieve_once_advantage(
                        table, cascade, Xv, test, lam)
    print(f"dataset classifier, held-out accuracy: {correct / n:.3f}\n")
    print("| lambda | best fixed | router (knows the dataset) | router on the guess: likeliest "
          "dataset / expected reward | " + " | ".join(f"cascade: {v}" for v in VARIANTS)
          + " |\n|" + "---|" * (4 + len(VARIANTS)))
    for lam in lams:
        R = Q - lam * C
        fixed, oracle = R.mean(axis=0).max(), R.max(axis=1).mean()
        router = R[np.arange(n), router_arms(splits, names, R)]
        likeliest, expected = router_on_guess(R, names, guess, splits)

        def cell(values: np.ndarray) -> str:
            return gap_cell(values, fixed, oracle)

        print(f"| {lam:g} | {fixed:.4f} | {cell(router)} | {cell(likeliest)} / {cell(expected)} | "
              + " | ".join(cell(rewards[v, lam]) for v in VARIANTS) + " |", flush=True)
    print("\nThe cascade's first decision: advantage of retrieving once over stopping, realized "
          "/ predicted mean, and their correlation\n\n| dataset | " + " | ".join(
              f"lambda {lam:g}" for lam in lams) + " |\n|" + "---|" * (1 + len(lams)))
    for dataset in [*np.unique(names), "all"]:
        rows = names == dataset if dataset != "all" else np.ones(n, bool)
        print(f"| {dataset} | " + " | ".join(
            f"{realized[lam][rows].mean():+.3f} / {predicted[lam][rows].mean():+.3f}, r = "
            f"{np.corrcoef(realized[lam][rows], predicted[lam][rows])[0, 1]:+.2f}"
            for lam in lams) + " |")
    print("\nF1 reward if the first decision retrieved once whenever the predicted advantage "
          "is above -shift (else stops)\n\n| shift | " + " | ".join(
              f"lambda {lam:g}: retrieving / reward" for lam in lams) + " |\n|"
          + "---|" * (1 + len(lams)))
    for shift in (-0.02, 0.0, 0.01, 0.02, 0.05):
        cells = []
        for lam in lams:
            go = predicted[lam] > -shift
            stop = (Q[:, 0] - lam * C[:, 0]).mean()
            cells.append(f"{go.mean():.2f} / {stop + np.where(go, realized[lam], 0).mean():.4f}")
        print(f"| {shift:+.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
