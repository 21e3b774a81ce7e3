"""The agent end to end: real index, real MiniLM encoder, real GGUF generator, real policies."""

from __future__ import annotations

import json
import threading

import pytest

from policies.baselines import FixedArm
from policies.features import FeatureMap, FeatureSpec, embedder_identity
from policies.linucb import LinUCB
from policies.persistence import PolicyBundle, load_policy, save_policy
from policies.rewards import RewardSpec
from searchagent.agent import Agent, FALLBACK_ARM, decision_of, make_agent
from searchagent.config import Config
from searchagent.errors import ConflictError, InputError
from tests.conftest import sample_questions
from tests.policy_data import retrieve_once_cascade

pytestmark = pytest.mark.slow

QUESTION = sample_questions()[0]


@pytest.fixture(scope="module")
def generator():
    from searchagent.generators.factory import make_generator

    return make_generator(Config().generator)


@pytest.fixture(scope="module")
def config():
    config = Config()
    config.agent.max_hops = 2
    config.agent.fewshot = 0               # short prompts keep the CPU tests fast
    config.agent.context_budget_tokens = 128
    config.retrieval.k = 1
    config.generator.max_new_tokens = 8
    return config


def bundle_for(searcher, policy_cls, **kwargs) -> PolicyBundle:
    spec = FeatureSpec(embedder=embedder_identity(searcher.encoder), embed_dim=searcher.encoder.dim,
                       projection="random", proj_dim=16)
    fmap = FeatureMap.fit(spec)
    return PolicyBundle(policy_cls(fmap.dim, **kwargs), fmap, RewardSpec(lam=0.1))


def test_no_policy_falls_back_and_still_scores_feedback(searcher, generator, config):
    agent = Agent(searcher, generator, config)
    answer = agent.answer(QUESTION["question"])
    decision = decision_of(answer)
    assert answer.strategy == FALLBACK_ARM == decision["arm"]
    assert decision["policy"] == f"fallback:{FALLBACK_ARM}" and answer.retrieval_calls == 1
    # fields docs/policy-reference.md promises on every answer (lam: what feedback uses)
    assert decision["lam"] == config.agent.lam and decision["propensity"] == 1.0
    result = agent.feedback(decision["request_id"], gold=QUESTION["answers"])
    assert result["applied"] is False and result["reward"] <= 1.0 - 0.1 * 1 + 1e-9
    with pytest.raises(ConflictError, match="already has feedback"):     # a 409 over REST
        agent.feedback(decision["request_id"], reward=1.0)
    with pytest.raises(InputError, match="unknown request id"):
        agent.feedback("never-served", reward=1.0)
    with pytest.raises(InputError, match="empty question"):
        agent.answer("  ")
    with pytest.raises(InputError, match="unknown arm"):
        agent.answer("who?", strategy="web")


def test_parametric_choice_reuses_the_closed_book_answer(searcher, generator, config):
    agent = Agent(searcher, generator, config,
                  policy=bundle_for(searcher, FixedArm, arm="parametric"))
    answer = agent.answer(QUESTION["question"])
    decision = decision_of(answer)
    assert answer.strategy == "parametric" and decision["closed_book_reused"]
    assert [s.kind for s in answer.trace].count("generate") == 1   # no second generation
    assert answer.retrieval_calls == 0 and answer.confidence is not None
    assert decision["fingerprint"] == agent.learner.fingerprint and len(decision["scores"]) == 3


def test_linucb_policy_serves_learns_and_survives_restart(searcher, generator, config, tmp_path):
    bundle = bundle_for(searcher, LinUCB, alpha=0.0)
    bundle.policy.b[1] = 1.0          # a prior that makes 'single' the greedy choice
    bundle.policy.theta[1] = bundle.policy.A_inv[1] @ bundle.policy.b[1]
    save_policy(bundle, tmp_path)
    config.agent.policy_dir = str(tmp_path)
    try:
        agent = make_agent(searcher, generator, config)
    finally:
        config.agent.policy_dir = ""
    answer = agent.answer(QUESTION["question"])
    decision = decision_of(answer)
    assert answer.strategy == "single" and not decision["explored"]
    assert answer.trace[1].detail["purpose"] == "confidence_probe"   # charged to the answer
    assert answer.retrieval_calls == 1 and decision["scores"][1] == max(decision["scores"])
    result = agent.feedback(decision["request_id"], gold=QUESTION["answers"])
    assert result["applied"] and agent.learner.bundle.policy.counts[1] == 1
    with pytest.raises(ConflictError, match="already has feedback"):
        agent.feedback(decision["request_id"], reward=1.0)
    named = decision_of(agent.answer(QUESTION["question"], ctx={"request_id": "server-id"}))
    assert named["request_id"] == "server-id"           # journaled under the caller's id
    assert agent.feedback("server-id", reward=0.0)["applied"]
    agent.close()
    assert load_policy(tmp_path).policy.counts.tolist() == [0, 2, 0]
    assert Agent(searcher, generator, config, policy=tmp_path).learner.stats()["feedback"] == 2


def test_cascade_policy_runs_its_steps_and_charges_every_answer(searcher, generator, config):
    agent = Agent(searcher, generator, config, policy=retrieve_once_cascade(searcher.encoder))
    answer = agent.answer(QUESTION["question"])
    decision = decision_of(answer)
    assert [step["action"] for step in decision["cascade"]] == ["single", "serve_single"]
    assert decision["ran"] == ["parametric", "single"] and decision["policy"] == "cascade"
    assert answer.strategy == decision["arm"] == "single" and answer.retrieval_calls == 1
    assert [s.kind for s in answer.trace].count("generate") == 2     # both answers charged
    rows = [len(model.Q) for model in agent.learner.bundle.policy.models]
    result = agent.feedback(decision["request_id"], gold=QUESTION["answers"])
    assert result["applied"] and result["quality"] is not None   # both answers scored:
    grown = [len(model.Q) - n for model, n in zip(agent.learner.bundle.policy.models, rows)]
    assert grown == [1, 1, 0]          # one row per step the feedback reached
    forced = agent.answer(QUESTION["question"], strategy="parametric")
    assert forced.strategy == "parametric" and decision_of(forced)["forced"]
    dear = decision_of(agent.answer(QUESTION["question"], ctx={"lam": 5.0, "request_id": "r5"}))
    assert [step["action"] for step in dear["cascade"]] == ["stop"]      # a call costs 5
    assert dear["request_id"] == "r5" and agent.feedback("r5", gold=QUESTION["answers"])["applied"]
    assert dear["ran"] == ["parametric"] and dear["lam"] == dear["lam_requested"] == 5.0


def test_the_agent_passes_and_journals_each_answers_confidence(searcher, generator, config):
    """A cascade that reads confidence gets each answer's from the strategies, and the
    journal keeps it for learning from feedback."""
    agent = Agent(searcher, generator, config,
                  policy=retrieve_once_cascade(searcher.encoder, confidence=True))
    request_id = decision_of(agent.answer(QUESTION["question"]))["request_id"]
    stored = agent.learner.con.execute("SELECT answers FROM decisions WHERE request_id = ?",
                                       [request_id]).fetchone()[0]
    ran = json.loads(stored)
    assert [r["arm"] for r in ran] == ["parametric", "single"]
    assert all(isinstance(r["confidence"], float) and r["confidence"] <= 0 for r in ran)
    rows = [len(model.Q) for model in agent.learner.bundle.policy.models]
    assert agent.feedback(request_id, gold=QUESTION["answers"])["applied"]
    assert [len(m.Q) - n for m, n in zip(agent.learner.bundle.policy.models, rows)] == [1, 1, 0]
    agent.close()


def test_agent_refuses_policies_for_other_encoders_or_missing_folders(searcher, generator,
                                                                      config, tmp_path):
    fmap = FeatureMap.fit(FeatureSpec(embedder="some-other-model", embed_dim=768))
    with pytest.raises(InputError, match="retrain the policy"):
        Agent(searcher, generator, config, policy=PolicyBundle(LinUCB(fmap.dim), fmap,
                                                               RewardSpec()))
    with pytest.raises(InputError, match="no trained policy"):
        Agent(searcher, generator, config, policy=tmp_path)


def test_concurrent_sessions_get_their_own_decisions(searcher, generator, config):
    agent = Agent(searcher, generator, config,
                  policy=bundle_for(searcher, FixedArm, arm="parametric"))
    questions = [q["question"] for q in sample_questions()[1:4]]
    answers, errors = {}, []

    def session(question: str) -> None:
        try:
            answers[question] = agent.answer(question, ctx={"lam": 0.5})
        except Exception as exc:   # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(answers) == 3
    ids = {decision_of(a)["request_id"] for a in answers.values()}
    for answer in answers.values():   # a fixed arm cannot rescore: the trained lambda is used
        assert decision_of(answer)["lam_requested"] == 0.5 and decision_of(answer)["lam"] == 0.1
    assert len(ids) == 3
    for request_id in ids:
        assert agent.feedback(request_id, reward=0.5)["reward"] == 0.5
    assert agent.learner.stats()["feedback"] == 3


def test_bm25_only_index_uses_the_bundled_encoder(small_corpus, generator, config, tmp_path,
                                                  searcher):
    from index.build import build_index
    from retrievers.searcher import Searcher

    build_index(small_corpus, tmp_path / "bm25", config=_bm25_only())
    bm25 = Searcher(tmp_path / "bm25")
    try:
        agent = Agent(bm25, generator, config,
                      policy=bundle_for(searcher, FixedArm, arm="parametric"))
        assert agent.encoder.dim == searcher.encoder.dim
        assert decision_of(agent.answer(QUESTION["question"]))["features"] is True
    finally:
        bm25.close()


def _bm25_only() -> Config:
    config = Config()
    config.index.dense = False
    return config
