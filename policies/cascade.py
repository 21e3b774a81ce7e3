"""The answer cascade: decide after each answer whether to stop, retrieve, or go multi-hop.

Closed book runs first. Then three decisions, each an argmax of E[quality] - lambda E[cost]
from per-action outcome models (``policies.outcome``) on the question's features plus the
features of the answers so far (``policies.answer_features``):

1. after the closed-book answer: ``stop``, ``single`` (retrieve once, go to 2) or ``multi``
   (run multi-hop directly and serve its answer);
2. after the one-retrieval answer: serve the closed-book or the retrieved answer, or
   ``escalate`` to multi-hop (go to 3);
3. after the multi-hop answer: serve whichever of the three answers is likeliest right.

Training runs backwards over the arm log (fitted Q-iteration, cross-fitted on inner folds):
escalating is worth step 3's choice, retrieving once step 2's. Step 1 has a retrieve-once
column per lambda of ``lam_grid``, so any request lambda uses the nearest. With
``confidence`` an answer is a ``(text, mean_logprob)`` pair. Online, ``learn`` gives each
step a row for every action a scored route reveals; ``walk(..., explore=True)`` takes a
random action with probability ``eps``. docs/policies.md has the why and the numbers.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from policies.answer_features import Generated, answer_features, feature_count
from policies.arms import ARMS
from policies.base import Policy
from policies.outcome import OutcomeModels
from searchagent.errors import InputError

STEPS = ("after_closed_book", "after_single", "after_multi")
ACTIONS = (("stop", "single", "multi"),
           ("serve_closed_book", "serve_single", "escalate"),
           ("serve_closed_book", "serve_single", "serve_multi"))
ROUTES = ("stop", "single", "multi", "escalate")     # closed book, then ...
LAM_GRID = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)


class AnswerCascade(Policy):
    algo = "cascade"
    stepwise = True          # learns online through ``learn``, not ``update``

    def __init__(self, dim: int, n_arms: int = 3, seed: int = 0, lam: float = 0.0,
                 embed_dims: int = 0, inner_folds: int = 3, l2: float = 100.0,
                 neighbors: int = 100, blend: float = 0.5, cue_weight: float = 0.15,
                 lam_grid: Sequence[float] = LAM_GRID, eps: float = 0.0,
                 confidence: bool = False):
        super().__init__(dim, n_arms, seed)
        if n_arms != 3 or inner_folds < 2 or min(lam_grid, default=-1.0) < 0 \
                or not 0.0 <= eps <= 1.0:
            raise InputError("the cascade needs the three arms parametric, single, multi, "
                             "inner_folds >= 2, a lam_grid of lambdas >= 0 and "
                             "0 <= eps <= 1", field="params")
        self.lam, self.embed_dims, self.inner_folds = float(lam), int(embed_dims), int(inner_folds)
        self.eps, self.confidence = float(eps), bool(confidence)
        self.lam_grid = sorted({float(v) for v in lam_grid} | {self.lam})
        self.model_params = {"l2": float(l2), "neighbors": int(neighbors),
                             "blend": float(blend), "cue_weight": float(cue_weight)}
        self.models: list[OutcomeModels | None] = [None] * len(STEPS)
        self.scales: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(STEPS)

    # -- deciding -------------------------------------------------------------------------
    def supports_lam(self) -> bool:
        return True

    def step_values(self, step: int, x: np.ndarray, question: str,
                    answers: Sequence[Generated], lam: float | None = None) -> np.ndarray:
        """E[quality] - lambda E[cost] of each action at ``step`` (0, 1, 2) for one question
        whose first ``step + 1`` answers (cascade order) are ``answers``; ``lam``: the
        request's lambda (the trained one when None)."""
        if not 0 <= step < len(STEPS) or len(answers) != step + 1:
            raise InputError(f"cascade step {step} needs {step + 1} answers, got {len(answers)}",
                             field="answers")
        return self._values(step, self._check(x)[None], [question], [list(answers)], lam)[0]

    def decide(self, step: int, x: np.ndarray, question: str, answers: Sequence[Generated],
               lam: float | None = None) -> tuple[str, np.ndarray]:
        values = self.step_values(step, x, question, answers, lam)
        return ACTIONS[step][int(np.argmax(values))], values

    def walk(self, x: np.ndarray, question: str, answer_of: Callable[[str], Generated],
             on_step: Callable[[dict], None] | None = None, lam: float | None = None,
             explore: bool = False) -> tuple[str, list[str], list[dict]]:
        """Run the cascade for one question. ``answer_of(arm)`` produces an arm's answer or
        (answer, mean token log-probability) by running the strategy, or looking it up in a
        log; it is called in running order, only for the arms the route needs. Returns the
        arm whose answer is served, the arms that ran and each step taken (``{"step",
        "action", "actions", "values", "explored", "probability"}``, also passed to
        ``on_step`` as it is taken). With ``explore``, each
        step takes a uniformly random action with probability ``eps``; ``probability`` is
        the chance the step took its action, so a route's propensity is their product."""
        ran = {"parametric": answer_of("parametric")}
        steps: list[dict] = []

        def decide(step: int) -> str:
            action, values = self.decide(step, x, question, list(ran.values()), lam)
            greedy, eps = action, self.eps if explore else 0.0
            if eps and self.rng.random() < eps:
                action = ACTIONS[step][int(self.rng.integers(len(ACTIONS[step])))]
            steps.append({"step": STEPS[step], "action": action,
                          "actions": list(ACTIONS[step]),
                          "values": [round(float(v), 4) for v in values],
                          "explored": action != greedy,
                          "probability": (1.0 - eps) * (action == greedy)
                          + eps / len(ACTIONS[step])})
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

    def route_choices(self, X: np.ndarray, questions: list[str],
                      answers: list[Sequence[Generated]], lam: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``walk`` for many questions whose three answers are all known (an arm log), in
        batch: the arm whose answer the cascade serves and the route it took (an index
        into ``ROUTES``; ``route_cost`` prices it)."""
        first, second, third = (np.argmax(self._values(k, X, questions, answers, lam), axis=1)
                                for k in range(len(STEPS)))
        took = [first == 0, first == 2, second < 2]
        served = np.select(took, [0, 2, second], third)
        return served.astype(np.int64), np.select(took, [0, 2, 1], 3).astype(np.int64)

    def routes(self, X: np.ndarray, questions: list[str], answers: list[Sequence[Generated]],
               cost: np.ndarray, lam: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``route_choices`` and the cost of every arm each route ran (``cost``: (n, 3))."""
        served, route = self.route_choices(X, questions, answers, lam)
        return served, route_cost(route, cost)

    def scores(self, x, explore=True, lam=None):
        raise InputError("the answer cascade decides after each answer, not once per "
                         "question: use AnswerCascade.decide (the agent does)", field="algo")

    def update(self, x, arm, reward, quality=None, cost=None) -> None:
        self.updates += 1             # one served arm says too little: see ``learn``

    def learn(self, x: np.ndarray, question: str, ran: Sequence[dict], served: str) -> None:
        """Learn from one answered question: ``ran`` lists the strategies that ran in order,
        each ``{"arm", "answer", "calls", "quality"}`` (and ``"confidence"``, the mean
        token log-probability, when known); ``served`` is the arm whose answer
        was served."""
        x = self._check(x)
        if any(model is None for model in self.models):
            raise InputError("the cascade is not trained", field="policy")
        got = {r["arm"]: r for r in ran}
        if list(got) not in (["parametric"], ["parametric", "single"], ["parametric", "multi"],
                             ["parametric", "single", "multi"]) or served not in got:
            raise InputError(f"not a cascade route: ran {list(got)}, served {served!r}",
                             field="answers")
        order = [(r["answer"], r.get("confidence")) for r in ran]
        total = float(sum(r["calls"] for r in ran))
        closed = got["parametric"]
        first = {0: (closed["quality"], closed["calls"])}
        if "single" in got:
            single = got["single"]
            for column in range(2, self.models[0].n_arms):    # retrieving once, any lambda
                first[column] = (got[served]["quality"], total)
            spent = closed["calls"] + single["calls"]
            second = {0: (closed["quality"], spent), 1: (single["quality"], spent)}
            if "multi" in got:
                second[2] = (got[served]["quality"], total)
                self._observe(2, x, question, order, {
                    action: (got[arm]["quality"], 0.0)
                    for action, arm in enumerate(("parametric", "single", "multi"))})
            self._observe(1, x, question, order, second)
        elif "multi" in got:
            first[1] = (got["multi"]["quality"], total)
        self._observe(0, x, question, order, first)
        self.updates += 1

    def _observe(self, step, x, question, answers, outcomes) -> None:
        inputs = self._stack(step, x[None], self._answer_matrix(step, [question], [answers]))[0]
        self.models[step].observe(inputs, outcomes)

    # -- training ---------------------------------------------------------------------------
    def fit_log(self, X: np.ndarray, questions: list[str],
                answers: list[Sequence[Generated]],
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
        shapes = [self._answer_matrix(k, questions, answers) for k in range(len(STEPS))]
        self.scales = [(A.mean(axis=0), A.std(axis=0) + 1e-6) for A in shapes]
        inputs = [self._stack(k, X, A) for k, A in enumerate(shapes)]
        folds = np.random.default_rng(self.seed).permutation(n) % self.inner_folds
        rows = np.arange(n)
        # step 3 serves one of the answers: its quality is the value of escalating
        target3 = (quality, np.zeros((n, 3)))
        served3 = np.argmax(self._cross_predict(inputs[2], *target3, folds)[0], axis=1)
        target2 = (np.column_stack([quality[:, 0], quality[:, 1], quality[rows, served3]]),
                   np.column_stack([paths["single"], paths["single"], paths["escalate"]]))
        quality2, cost2 = self._cross_predict(inputs[1], *target2, folds)
        # retrieving once is worth what step 2 makes of it, deciding at each grid lambda
        chosen2 = [np.argmax(quality2 - lam * cost2, axis=1) for lam in self.lam_grid]
        target1 = (np.column_stack([quality[:, 0], quality[:, 2]]
                                   + [target2[0][rows, c] for c in chosen2]),
                   np.column_stack([paths["stop"], paths["multi"]]
                                   + [target2[1][rows, c] for c in chosen2]))
        self.models = [self._model(inputs[k], *target)
                       for k, target in enumerate((target1, target2, target3))]
        self.updates += n

    def _cross_predict(self, Xs, Q, C, folds) -> tuple[np.ndarray, np.ndarray]:
        """Quality and cost predicted on each row by a model fitted without its fold."""
        quality, cost = np.zeros(Q.shape), np.zeros(C.shape)
        for k in range(self.inner_folds):
            held = folds == k
            model = self._model(Xs[~held], Q[~held], C[~held])
            quality[held], cost[held] = model.predict(Xs[held])
        return quality, cost

    def _model(self, Xs, Q, C, stale: int = 0) -> OutcomeModels:
        model = OutcomeModels(Xs.shape[1], Q.shape[1], self.seed, self.lam, self.embed_dims,
                              eps=0.0, **self.model_params)
        model.fit(Xs, Q, C, stale)
        return model

    def _stack(self, step: int, X, A: np.ndarray) -> np.ndarray:
        """The question's features beside the standardized answer features of ``step``."""
        mean, scale = self.scales[step]
        return np.hstack([np.asarray(X, np.float64).reshape(-1, self.dim), (A - mean) / scale])

    def _answer_matrix(self, step: int, questions, answers) -> np.ndarray:
        """Features of the first ``step + 1`` answers of each question, (n, features)."""
        return np.array([answer_features(q, list(a)[:step + 1], self.confidence)
                         for q, a in zip(questions, answers)], np.float64
                        ).reshape(len(questions), feature_count(step + 1, self.confidence))

    def _values(self, step, X, questions, answers, lam=None) -> np.ndarray:
        if self.models[step] is None:
            raise InputError("the cascade is not trained", field="policy")
        lam = self.lam if lam is None else float(lam)
        quality, cost = self.models[step].predict(
            self._stack(step, X, self._answer_matrix(step, questions, answers)))
        if step == 0:       # stop, retrieving once at the grid lambda nearest lam, multi-hop
            nearest = int(np.argmin(np.abs(np.asarray(self.lam_grid) - lam)))
            quality, cost = quality[:, [0, 2 + nearest, 1]], cost[:, [0, 2 + nearest, 1]]
        return quality - lam * cost

    # -- persistence ----------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "embed_dims": self.embed_dims, "lam_grid": self.lam_grid,
                "eps": self.eps, "confidence": self.confidence,
                "inner_folds": self.inner_folds, **self.model_params}

    def state(self):
        values, arrays = super().state()
        values["first_columns"] = "stop,multi,single@lam_grid"
        for k, model in enumerate(self.models):
            if model is None:
                continue
            values[f"cascade{k}.stale"] = model.stale
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
                Q, C = np.asarray(arrays[f"cascade{k}.Q"]), np.asarray(arrays[f"cascade{k}.C"])
                if k == 0 and "first_columns" not in values:   # saved before lam_grid
                    self.lam_grid, Q, C = [self.lam], Q[:, [0, 2, 1]], C[:, [0, 2, 1]]
                self.models[k] = self._model(arrays[f"cascade{k}.X"], Q, C,
                                             values.get(f"cascade{k}.stale", 0))


def _path_costs(cost: np.ndarray) -> dict[str, np.ndarray]:
    """What each route through the cascade spends: closed book always runs first."""
    return {"stop": cost[:, 0], "single": cost[:, 0] + cost[:, 1],
            "multi": cost[:, 0] + cost[:, 2], "escalate": cost.sum(axis=1)}


def route_cost(route: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """What each question's route (an index into ``ROUTES``) spent of ``cost`` (n, 3)."""
    paths = _path_costs(np.asarray(cost, np.float64))
    return np.choose(route, [paths[name] for name in ROUTES])
