"""Answer metrics follow the official HotpotQA rules; recall and bootstrap CIs behave."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.bootstrap import bootstrap_ci
from eval.metrics import (accuracy, answer_scores, exact_match, f1_score, normalize_answer,
                          passage_recall)


def test_normalization_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Chief-of Protocol!  ") == "chiefof protocol"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"          # articles only as whole words


def test_exact_match_takes_the_best_alias():
    assert exact_match("the Denver Broncos.", ["Broncos", "Denver Broncos"]) == 1.0
    assert exact_match("Denver", ["Denver Broncos"]) == 0.0
    assert exact_match("x", []) == 0.0
    assert exact_match("Mars", "Mars") == 1.0                 # a bare string gold works


def test_f1_partial_overlap_and_alias_max():
    # pred: chief of protocol of united states (6 tokens); gold: 3 tokens; 3 in common
    assert f1_score("Chief of Protocol of the United States", ["Chief of Protocol"]) == \
        pytest.approx(2 * (3 / 6) * 1 / ((3 / 6) + 1))
    assert f1_score("Bob Russell", ["Bobby Scott", "Bob Russell"]) == 1.0
    assert f1_score("", ["anything"]) == 0.0


def test_f1_yes_no_rule():
    assert f1_score("yes", ["yes"]) == 1.0
    assert f1_score("yes it is", ["yes"]) == 0.0              # gold is special, pred differs
    assert f1_score("no", ["no way"]) == 0.0                  # pred is special, gold differs
    assert f1_score("noanswer", ["no answer"]) == 0.0
    assert f1_score("yes", ["no", "yes"]) == 1.0


def test_accuracy_is_containment_of_a_normalized_gold():
    assert accuracy("She served as Chief of Protocol.", ["chief of protocol"]) == 1.0
    assert accuracy("Chief", ["Chief of Protocol"]) == 0.0
    assert accuracy("anything", ["", "the"]) == 0.0           # empty golds never match
    assert answer_scores("Tulsa, Oklahoma", ["Tulsa"]) == {"em": 0.0, "f1": pytest.approx(2 / 3),
                                                          "acc": 1.0}


def test_passage_recall_at_k():
    gold = ["Shirley Temple", "Kiss and Tell (1945 film)"]
    got = ["Meet Corliss Archer", "shirley  temple", "Kiss and Tell (1945 film)"]
    assert passage_recall(got, gold) == 1.0
    assert passage_recall(got, gold, k=2) == 0.5
    assert passage_recall([], gold) == 0.0
    assert math.isnan(passage_recall(got, []))


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = bootstrap_ci(rng.integers(0, 2, 50).tolist())
    large = bootstrap_ci(rng.integers(0, 2, 2000).tolist())
    for ci in (small, large):
        assert ci.low <= ci.mean <= ci.high
    assert (large.high - large.low) < (small.high - small.low)
    assert bootstrap_ci([1.0] * 10).fmt() == "100.0 [100.0, 100.0]"
    assert math.isnan(bootstrap_ci([]).mean)
    assert bootstrap_ci([0, 1, float("nan")]).mean == 0.5
