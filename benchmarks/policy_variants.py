"""What else was tried to close the gap to the dataset-name router (issue 14), side by side.

Each variant predicts, for held-out questions, every arm's quality and cost (or picks an
arm per lambda directly); all see the same folds (5-fold by question id x ``--seeds``) and
the same standardized features as the default policy (MiniLM embedding + lexical + style
cues). Printed per reward metric and lambda: mean reward, share of the best-fixed-arm ->
oracle gap closed, and the lower end of the paired bootstrap 95% CI against the best
fixed arm. Variants:

- ``outcome``: the default ``policies.outcome.OutcomeModels`` (the reference);
- ``char-ngrams``: per-arm logistic regression on hashed char 2-4-gram TF-IDF of the text;
- ``char + outcome``: the average of the two;
- ``paired-diff``: ridge on each arm's quality *difference* to closed book (paired rows);
- ``stacked``: the outcome model's logistic and neighbour parts recombined per arm by a
  linear fit on inner out-of-fold predictions (calibrates the predicted differences);
- ``margin``: leave the training folds' best fixed arm only for a predicted advantage
  over a margin tuned on inner folds (against the winner's curse);
- ``cost-sensitive``: multinomial logistic on the best arm, weighted by the reward spread;
- ``kmeans-router``: k-means (24) clusters of the features, each serving its best arm;
- ``soft-router``: P(dataset | text) from a classifier trained *with the dataset labels*,
  times each dataset's mean outcome (a diagnostic: how far text gets to the router);
- ``answer-aware``: the outcome model plus features of the closed-book answer (length,
  number, year, capitals, overlap with the question, yes/no, lists, refusals), for a
  pipeline that answers closed book first.

    .venv/bin/python benchmarks/policy_variants.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from policies.answer_features import answer_shape  # noqa: E402
from policies.armlog import kfold_by_id  # noqa: E402
from policies.features import FeatureMap, FeatureSpec  # noqa: E402
from policies.outcome import OutcomeModels  # noqa: E402
from policies.replay import load_replay_data  # noqa: E402

LAMS = (0.0, 0.01, 0.02, 0.05, 0.1)


class Fold:
    """One training/held-out split with its features; variants read what they need."""

    def __init__(self, data, train, test, fmap):
        self.data, self.train, self.test = data, train, test
        questions = data["questions"]
        self.Xtr = fmap.transform(data["emb"][train], [questions[i] for i in train])
        self.Xte = fmap.transform(data["emb"][test], [questions[i] for i in test])
        self.embed_dims = data["emb"].shape[1]

    def outcome(self, Xtr=None, Xte=None, rows=None, **params):
        Xtr = self.Xtr if Xtr is None else Xtr
        rows = self.train if rows is None else rows
        model = OutcomeModels(Xtr.shape[1], embed_dims=self.embed_dims, **params)
        model.fit(Xtr, self.Q[rows], self.C[rows])
        return model, model.predict(self.Xte if Xte is None else Xte)

    def text(self):
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        hashing = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2 ** 18,
                                    alternate_sign=False, lowercase=False, norm=None)
        questions = self.data["questions"]
        tr = hashing.transform([questions[i] for i in self.train])
        te = hashing.transform([questions[i] for i in self.test])
        tfidf = TfidfTransformer(sublinear_tf=True).fit(tr)
        return tfidf.transform(tr), tfidf.transform(te)


def v_outcome(f):
    return f.outcome()[1]


def v_char(f, weight=1.0):
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression, Ridge

    Ttr, Tte = f.text()
    q, c = np.zeros((Tte.shape[0], 3)), np.zeros((Tte.shape[0], 3))
    for a in range(3):
        y = np.clip(f.Q[f.train, a], 0, 1)
        model = LogisticRegression(C=1.0, max_iter=3000).fit(
            sparse.vstack([Ttr, Ttr]), np.r_[np.ones(len(y)), np.zeros(len(y))],
            sample_weight=np.r_[y, 1 - y])
        q[:, a] = model.predict_proba(Tte)[:, 1]
        c[:, a] = Ridge(alpha=10.0).fit(Ttr, f.C[f.train, a]).predict(Tte)
    if weight < 1.0:
        q0, c0 = v_outcome(f)
        q, c = weight * q + (1 - weight) * q0, weight * c + (1 - weight) * c0
    return q, c


def v_paired_diff(f):
    from sklearn.linear_model import Ridge

    q, c = v_outcome(f)
    for a in (1, 2):
        diff = f.Q[f.train, a] - f.Q[f.train, 0]
        q[:, a] = q[:, 0] + Ridge(alpha=1000.0).fit(f.Xtr, diff).predict(f.Xte)
    return q, c


def inner_oof(f, parts=(1.0, 0.0), inner=3):
    """Out-of-fold predictions of the outcome model's parts on the training rows."""
    folds = np.random.default_rng(1).permutation(len(f.train)) % inner
    oof = {b: (np.zeros((len(f.train), 3)), np.zeros((len(f.train), 3))) for b in parts}
    for k in range(inner):
        tr, te = folds != k, folds == k
        model, _ = f.outcome(f.Xtr[tr], f.Xtr[te], f.train[tr])
        for b in parts:
            model.blend = b
            oof[b][0][te], oof[b][1][te] = model.predict(f.Xtr[te])
    return oof


def v_stacked(f):
    from sklearn.linear_model import LinearRegression

    oof = inner_oof(f)
    model, (q, c) = f.outcome()
    test = {}
    for b in (1.0, 0.0):
        model.blend = b
        test[b] = model.predict(f.Xte)[0]
    for a in (1, 2):
        fit = LinearRegression().fit(np.column_stack([oof[b][0][:, a] - oof[b][0][:, 0]
                                                      for b in oof]),
                                     f.Q[f.train, a] - f.Q[f.train, 0])
        q[:, a] = q[:, 0] + fit.predict(np.column_stack([test[b][:, a] - test[b][:, 0]
                                                         for b in test]))
    return q, c


def v_margin(f):
    oof = inner_oof(f, parts=(0.5,))[0.5]
    q, c = v_outcome(f)
    out = {}
    for lam in LAMS:
        R = f.Q[f.train] - lam * f.C[f.train]
        fixed = int(np.argmax(R.mean(axis=0)))

        def choose(qq, cc, margin):
            values = qq - lam * cc
            values[:, fixed] += margin
            return np.argmax(values, axis=1)

        margin = max((0, 0.005, 0.01, 0.02, 0.03, 0.05),
                     key=lambda m: R[np.arange(len(R)), choose(*oof, m)].mean())
        out[lam] = choose(q, c, margin)
    return out


def v_cost_sensitive(f):
    from sklearn.linear_model import LogisticRegression

    out = {}
    for lam in LAMS:
        R = f.Q[f.train] - lam * f.C[f.train]
        weight = R.max(axis=1) - R.min(axis=1)
        keep = weight > 1e-9
        model = LogisticRegression(C=0.01, max_iter=3000).fit(
            f.Xtr[keep], np.argmax(R, axis=1)[keep], sample_weight=weight[keep])
        proba = np.zeros((len(f.test), 3))
        proba[:, model.classes_] = model.predict_proba(f.Xte)
        out[lam] = np.argmax(proba, axis=1)
    return out


def v_kmeans_router(f, k=24, prior=50.0):
    from sklearn.cluster import KMeans

    km = KMeans(k, n_init=4, random_state=0).fit(f.Xtr)
    labels, held = km.labels_, km.predict(f.Xte)
    q, c = np.zeros((len(f.test), 3)), np.zeros((len(f.test), 3))
    gq, gc = f.Q[f.train].mean(axis=0), f.C[f.train].mean(axis=0)
    for cluster in range(k):
        rows = f.train[labels == cluster]
        q[held == cluster] = (f.Q[rows].sum(axis=0) + prior * gq) / (len(rows) + prior)
        c[held == cluster] = (f.C[rows].sum(axis=0) + prior * gc) / (len(rows) + prior)
    return q, c


def v_soft_router(f):
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    Ttr, Tte = f.text()
    names = f.data["datasets"]
    model = LogisticRegression(C=3.0, max_iter=3000).fit(
        sparse.hstack([sparse.csr_matrix(f.Xtr), Ttr]).tocsr(), names[f.train])
    proba = model.predict_proba(sparse.hstack([sparse.csr_matrix(f.Xte), Tte]).tocsr())
    rows = [f.train[names[f.train] == d] for d in model.classes_]
    return (proba @ np.stack([f.Q[r].mean(axis=0) for r in rows]),
            proba @ np.stack([f.C[r].mean(axis=0) for r in rows]))


def v_answer_aware(f):
    A = f.data["answer_features"]
    mean, std = A[f.train].mean(axis=0), A[f.train].std(axis=0) + 1e-6
    return f.outcome(np.hstack([f.Xtr, (A[f.train] - mean) / std]),
                     np.hstack([f.Xte, (A[f.test] - mean) / std]))[1]


VARIANTS = {"outcome": v_outcome, "char-ngrams": v_char,
            "char + outcome": lambda f: v_char(f, 0.5), "paired-diff": v_paired_diff,
            "stacked": v_stacked, "margin": v_margin, "cost-sensitive": v_cost_sensitive,
            "kmeans-router": v_kmeans_router, "soft-router": v_soft_router,
            "answer-aware": v_answer_aware}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--metrics", default="f1,em")
    parser.add_argument("--seeds", type=int, default=1, help="fold assignments")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    table, emb, embedder = load_replay_data(args.log)
    data = {"questions": table.questions, "emb": emb,
            "datasets": np.array([key[0] for key in table.keys])}
    data["answer_features"] = np.array(
        [answer_shape(q, a[0]) for q, a in zip(table.questions, table.answers)])
    spec = FeatureSpec(embedder=embedder, embed_dim=emb.shape[1], confidence=False,
                       cues=True, standardize=True)
    names = args.variants.split(",")
    n = len(table)
    for metric in args.metrics.split(","):
        Q, C = table.quality[metric], table.steps
        got = {(lam, name): np.zeros(n) for lam in LAMS for name in names}
        for seed in range(args.seeds):
            for train, test in kfold_by_id(table.keys, 5, seed=seed):
                fmap = FeatureMap.fit(spec, emb[train], [table.questions[i] for i in train])
                fold = Fold(data, train, test, fmap)
                fold.Q, fold.C = Q, C
                for name in names:
                    out = VARIANTS[name](fold)
                    for lam in LAMS:
                        arms = out[lam] if isinstance(out, dict) else \
                            np.argmax(out[0] - lam * out[1], axis=1)
                        R = Q[test] - lam * C[test]
                        got[(lam, name)][test] += R[np.arange(len(test)), arms] / args.seeds
        print(f"\n{metric} reward, 5 folds x {args.seeds} seed(s): reward (gap closed, CI low "
              f"vs best fixed)\n\n| lambda | best fixed | " + " | ".join(names) + " |\n|"
              + "---|" * (len(names) + 2))
        draws = np.random.default_rng(0).integers(0, n, (1000, n))
        for lam in LAMS:
            R = Q - lam * C
            fixed = R[:, int(np.argmax(R.mean(axis=0)))]
            gap = R.max(axis=1).mean() - fixed.mean()
            cells = []
            for name in names:
                value = got[(lam, name)]
                low = np.percentile((value - fixed)[draws].mean(axis=1), 2.5)
                cells.append(f"{value.mean():.4f} ({(value.mean() - fixed.mean()) / gap:+.2f}, "
                             f"{low:+.3f})")
            print(f"| {lam:g} | {fixed.mean():.4f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
