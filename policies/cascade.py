"""The answer cascade: decide after each answer whether to stop, retrieve, or go multi-hop.

Closed book runs first (no retrieval). Three decisions follow, each an argmax of
E[quality] - lambda E[cost] from per-action outcome models (``policies.outcome``) on the
question's features plus the features of the answers generated so far
(``policies.answer_features``):

1. after the closed-book answer: ``stop`` (serve it, 0 calls), ``single`` (retrieve once
   and go to 2), ``multi`` (run multi-hop directly and serve its answer);
2. after the one-retrieval answer: serve the closed-book answer or the retrieved one
   (the call is spent either way), or ``escalate`` to multi-hop (1 + its calls, go to 3);
3. after the multi-hop answer: serve whichever of the three answers is likeliest right.

Each step's value depends on the steps after it, so training runs backwards on the arm
log (every arm's answer and outcome for every question): the outcome of escalating is
step 3's choice, and of retrieving once step 2's, both measured on inner folds the model
making the choice did not see (fitted Q-iteration with cross-fitting), for one lambda.

Online (``learn``): feedback with a gold answer scores every answer the cascade generated
for a question; each step's model then gains a row for every action whose outcome that
reveals (closed book's always; retrieving once, escalating, multi-hop when they ran) and
refits as the outcome models do (``refit_every``). Choices stay greedy.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from policies.answer_features import answer_features, feature_count
from policies.arms import ARMS
from policies.base import Policy
from policies.outcome import OutcomeModels
from searchagent.errors import InputError

STEPS = ("after_closed_book", "after_single", "after_multi")
ACTIONS = (("stop", "single", "multi"),
           ("serve_closed_book", "serve_single", "escalate"),
           ("serve_closed_book", "serve_single", "serve_multi"))


class AnswerCascade(Policy):
    algo = "cascade"
    stepwise = True          # learns online through ``learn``, not ``update``

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, lam: float = 0.0,
                 embed_dims: int = 0, inner_folds: int = 3, l2: float = 100.0,
                 neighbors: int = 100, blend: float = 0.5, cue_weight: float = 0.15):
        super().__init__(dim, n_arms, seed)
        if n_arms != 3 or inner_folds < 2:
            raise InputError("the cascade needs the three arms parametric, single, multi and "
                             "inner_folds >= 2", field="params")
        self.lam, self.embed_dims, self.inner_folds = float(lam), int(embed_dims), int(inner_folds)
        self.model_params = {"l2": float(l2), "neighbors": int(neighbors),
                             "blend": float(blend), "cue_weight": float(cue_weight)}
        self.models: list[OutcomeModels | None] = [None] * len(STEPS)
        self.scales: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(STEPS)

    # -- deciding -------------------------------------------------------------------------
    def step_values(self, step: int, x: np.ndarray, question: str,
                    answers: Sequence[str]) -> np.ndarray:
        """E[quality] - lambda E[cost] of each action at ``step`` (0, 1, 2) for one question
        whose first ``step + 1`` answers (cascade order) are ``answers``."""
        if not 0 <= step < len(STEPS) or len(answers) != step + 1:
            raise InputError(f"cascade step {step} needs {step + 1} answers, got {len(answers)}",
                             field="answers")
        return self._values(step, self._check(x)[None], [question], [list(answers)])[0]

    def decide(self, step: int, x: np.ndarray, question: str,
               answers: Sequence[str]) -> tuple[str, np.ndarray]:
        values = self.step_values(step, x, question, answers)
        return ACTIONS[step][int(np.argmax(values))], values

    def walk(self, x: np.ndarray, question: str, answer_of: Callable[[str], str],
             on_step: Callable[[dict], None] | None = None) -> tuple[str, list[str], list[dict]]:
        """Run the cascade for one question. ``answer_of(arm)`` produces an arm's answer (runs
        the strategy, or looks it up in a log); it is called in running order, only for the
        arms the route needs. Returns the arm whose answer is served, the arms that ran and
        each step taken (``{"step", "action", "actions", "values"}``, also passed to
        ``on_step`` as it is taken)."""
        ran = {"parametric": answer_of("parametric")}
        steps: list[dict] = []

        def decide(step: int) -> str:
            action, values = self.decide(step, x, question, list(ran.values()))
            steps.append({"step": STEPS[step], "action": action,
                          "actions": list(ACTIONS[step]),
                          "values": [round(float(v), 4) for v in values]})
            if on_step is not None:
                on_step(steps[-1])
            return action

        action = decide(0)
        if action == "stop":
            served = "parametric"
        elif action == "multi":
            ran["multi"] = answer_of("multi")
            served = "multi"
        else:
            ran["single"] = answer_of("single")
            action = decide(1)
            if action == "escalate":
                ran["multi"] = answer_of("multi")
                served = ARMS[ACTIONS[2].index(decide(2))]
            else:
                served = "parametric" if action == "serve_closed_book" else "single"
        return served, list(ran), steps

    def routes(self, X: np.ndarray, questions: list[str], answers: list[Sequence[str]],
               cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``walk`` for many questions whose three answers are all known (an arm log), in
        batch: the arm whose answer the cascade serves and the cost of every arm it ran
        (``cost``: (n, 3))."""
        first = np.argmax(self._values(0, X, questions, answers), axis=1)
        second = np.argmax(self._values(1, X, questions, answers), axis=1)
        third = np.argmax(self._values(2, X, questions, answers), axis=1)
        served = np.select([first == 0, first == 2, second < 2], [0, 2, second], third)
        paths = _path_costs(np.asarray(cost, np.float64))
        spent = np.select([first == 0, first == 2, second < 2],
                          [paths["stop"], paths["multi"], paths["single"]], paths["escalate"])
        return served.astype(np.int64), spent

    def scores(self, x, explore=True, lam=None):
        raise InputError("the answer cascade decides after each answer, not once per "
                         "question: use AnswerCascade.decide (the agent does)", field="algo")

    def update(self, x, arm, reward, quality=None, cost=None) -> None:
        self.updates += 1             # one served arm says too little: see ``learn``

    def learn(self, x: np.ndarray, question: str, ran: Sequence[dict], served: str) -> None:
        """Learn from one answered question: ``ran`` lists the strategies that ran in order,
        each ``{"arm", "answer", "calls", "quality"}``; ``served`` is the arm whose answer
        was served."""
        x = self._check(x)
        if any(model is None for model in self.models):
            raise InputError("the cascade is not trained", field="policy")
        got = {r["arm"]: r for r in ran}
        if list(got) not in (["parametric"], ["parametric", "single"], ["parametric", "multi"],
                             ["parametric", "single", "multi"]) or served not in got:
            raise InputError(f"not a cascade route: ran {list(got)}, served {served!r}",
                             field="answers")
        order = [r["answer"] for r in ran]
        total = float(sum(r["calls"] for r in ran))
        closed = got["parametric"]
        self._observe(0, x, question, order, 0, closed["quality"], closed["calls"])
        if "single" in got:
            single = got["single"]
            self._observe(0, x, question, order, 1, got[served]["quality"], total)
            spent = closed["calls"] + single["calls"]
            self._observe(1, x, question, order, 0, closed["quality"], spent)
            self._observe(1, x, question, order, 1, single["quality"], spent)
            if "multi" in got:
                self._observe(1, x, question, order, 2, got[served]["quality"], total)
                for action, arm in enumerate(("parametric", "single", "multi")):
                    self._observe(2, x, question, order, action, got[arm]["quality"], 0.0)
        elif "multi" in got:
            self._observe(0, x, question, order, 2, got["multi"]["quality"], total)
        self.updates += 1

    def _observe(self, step, x, question, answers, action, quality, cost) -> None:
        inputs = self._stack(step, x[None], _answer_matrix(step, [question], [answers]))[0]
        self.models[step].update(inputs, action, quality - self.lam * cost, quality, cost)

    # -- training ---------------------------------------------------------------------------
    def fit_log(self, X: np.ndarray, questions: list[str], answers: list[Sequence[str]],
                quality: np.ndarray, cost: np.ndarray) -> None:
        """Train all three steps on an arm log: per question the three arms' answers,
        quality (n, 3) and cost (n, 3: retrieval calls or seconds of running each arm)."""
        X, quality = np.asarray(X, np.float64), np.asarray(quality, np.float64)
        n = len(X)
        if not (len(questions) == len(answers) == len(quality) == len(cost) == n) \
                or n < 2 * self.inner_folds:
            raise InputError(f"the cascade needs aligned questions, answers, quality and "
                             f"cost for at least {2 * self.inner_folds} questions", field="log")
        paths = _path_costs(np.asarray(cost, np.float64))
        shapes = [_answer_matrix(k, questions, answers) for k in range(len(STEPS))]
        self.scales = [(A.mean(axis=0), A.std(axis=0) + 1e-6) for A in shapes]
        inputs = [self._stack(k, X, A) for k, A in enumerate(shapes)]
        folds = np.random.default_rng(self.seed).permutation(n) % self.inner_folds
        rows = np.arange(n)
        # step 3 serves one of the answers: its quality is the value of escalating
        target3 = (quality, np.zeros((n, 3)))
        served3 = self._cross_fit(inputs[2], *target3, folds)
        target2 = (np.column_stack([quality[:, 0], quality[:, 1], quality[rows, served3]]),
                   np.column_stack([paths["single"], paths["single"], paths["escalate"]]))
        chosen2 = self._cross_fit(inputs[1], *target2, folds)
        target1 = (np.column_stack([quality[:, 0], target2[0][rows, chosen2], quality[:, 2]]),
                   np.column_stack([paths["stop"], target2[1][rows, chosen2], paths["multi"]]))
        for k, (Q, C) in enumerate((target1, target2, target3)):
            self.models[k] = self._model(inputs[k], Q, C)
        self.updates += n

    def _cross_fit(self, Xs, Q, C, folds) -> np.ndarray:
        """The choice on each row of a model fitted without that row's fold."""
        out = np.zeros(len(Xs), np.int64)
        for k in range(self.inner_folds):
            held = folds == k
            model = self._model(Xs[~held], Q[~held], C[~held])
            quality, cost = model.predict(Xs[held])
            out[held] = np.argmax(quality - self.lam * cost, axis=1)
        return out

    def _model(self, Xs, Q, C) -> OutcomeModels:
        model = OutcomeModels(Xs.shape[1], 3, self.seed, self.lam, self.embed_dims, eps=0.0,
                              **self.model_params)
        model.fit(Xs, Q, C)
        return model

    def _stack(self, step: int, X, A: np.ndarray) -> np.ndarray:
        """The question's features beside the standardized answer features of ``step``."""
        mean, scale = self.scales[step]
        return np.hstack([np.asarray(X, np.float64).reshape(-1, self.dim), (A - mean) / scale])

    def _values(self, step, X, questions, answers) -> np.ndarray:
        if self.models[step] is None:
            raise InputError("the cascade is not trained", field="policy")
        inputs = self._stack(step, X, _answer_matrix(step, questions, answers))
        quality, cost = self.models[step].predict(inputs)
        return quality - self.lam * cost

    # -- persistence ----------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "embed_dims": self.embed_dims,
                "inner_folds": self.inner_folds, **self.model_params}

    def state(self):
        values, arrays = super().state()
        for k, model in enumerate(self.models):
            if model is None:
                continue
            arrays.update({f"cascade{k}.X": model.X, f"cascade{k}.Q": model.Q,
                           f"cascade{k}.C": model.C, f"cascade{k}.mean": self.scales[k][0],
                           f"cascade{k}.scale": self.scales[k][1]})
        return values, arrays

    def load_state(self, values, arrays) -> None:
        super().load_state(values, arrays)
        for k in range(len(STEPS)):
            if f"cascade{k}.X" in arrays:      # refitted: deterministic, the same models
                self.scales[k] = (np.asarray(arrays[f"cascade{k}.mean"]),
                                  np.asarray(arrays[f"cascade{k}.scale"]))
                self.models[k] = self._model(arrays[f"cascade{k}.X"], arrays[f"cascade{k}.Q"],
                                             arrays[f"cascade{k}.C"])


def _path_costs(cost: np.ndarray) -> dict[str, np.ndarray]:
    """What each route through the cascade spends: closed book always runs first."""
    return {"stop": cost[:, 0], "single": cost[:, 0] + cost[:, 1],
            "multi": cost[:, 0] + cost[:, 2], "escalate": cost.sum(axis=1)}


def _answer_matrix(step: int, questions, answers) -> np.ndarray:
    """Features of the first ``step + 1`` answers of each question, (n, features)."""
    return np.array([answer_features(q, list(a)[:step + 1]) for q, a in zip(questions, answers)],
                    np.float64).reshape(len(questions), feature_count(step + 1))
