"""Save and load a trained policy: versioned JSON + npz arrays + safetensors weights.

Folder layout (other files, such as the online learner's journal, may live beside it)::

    policy.json            format + version, algo, arms, hyperparameters, JSON state,
                           feature spec + fingerprint, reward spec, training metadata,
                           and the name, size and sha256 of each array file
    arrays-<gen>.npz       numpy state (ridge matrices, buffers, classifier weights)
    model-<gen>.safetensors  neural weights (tensors named ``net.*``), when there are any

Array files are written under a fresh generation name first and ``policy.json`` is
replaced atomically last, so a crash mid-save leaves the previous policy intact.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.arms import ARMS, check_arms
from policies.base import Policy
from policies.baselines import FixedArm, SupervisedClassifier
from policies.cascade import AnswerCascade
from policies.features import FeatureMap
from policies.linucb import LinUCB
from policies.outcome import OutcomeModels
from policies.rewards import RewardSpec
from policies.thompson import LinearThompson
from searchagent.errors import InputError
from searchagent.files import process_alive, write_atomically

FORMAT = "searchagent-policy"
VERSION = 1
POLICY_FILE = "policy.json"


def policy_classes() -> dict[str, type[Policy]]:
    from policies.neural import NeuralEpsGreedy   # torch only when a neural policy is used

    return {cls.algo: cls for cls in (OutcomeModels, LinUCB, LinearThompson, NeuralEpsGreedy,
                                      FixedArm, SupervisedClassifier, AnswerCascade)}


ALGOS = ("cascade", "outcome", "linucb", "thompson", "neural", "fixed", "supervised")


def make_policy(algo: str, dim: int, seed: int = 0, **params: Any) -> Policy:
    classes = policy_classes()
    if algo not in classes:
        raise InputError(f"unknown policy algorithm {algo!r} (choose from "
                         f"{', '.join(ALGOS)})", field="algo")
    try:
        return classes[algo](dim, len(ARMS), seed, **params)
    except (TypeError, ValueError) as exc:        # an unknown name, or "alpha=abc"
        known = [name for name in inspect.signature(classes[algo]).parameters
                 if name not in ("dim", "n_arms", "seed")]
        raise InputError(f"bad parameters for {algo}: {exc} (its parameters: "
                         f"{', '.join(known)})", field="params") from exc


@dataclass
class PolicyBundle:
    """Everything serving needs: the policy, how to build its features, how to score."""

    policy: Policy
    features: FeatureMap
    reward: RewardSpec
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.features.fingerprint


# what a save killed before its policy.json leaves: arrays, weights and the temporaries of
# ``write_atomically`` (``.arrays-<gen>.tmp-<pid>-<hex>.npz``, ``.policy.tmp-<pid>-<hex>.json``)
TEMPORARY = re.compile(r"\.(?:(?:arrays|model)-[0-9a-f]{12}|policy)\.tmp-(\d+)-[0-9a-f]{12}"
                       r"\.(?:npz|safetensors|json)")
LEFTOVERS = re.compile(rf"(?:arrays|model)-[0-9a-f]{{12}}\.(?:npz|safetensors)|{TEMPORARY.pattern}")


def save_policy(bundle: PolicyBundle, folder: str | Path, extra: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy = bundle.policy
    values, arrays = policy.state()
    arrays = {**arrays, **bundle.features.arrays()}
    generation = uuid.uuid4().hex[:12]
    files = {}
    tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items() if k.startswith("net.")}
    plain = {k: v for k, v in arrays.items() if not k.startswith("net.")}
    npz_name = f"arrays-{generation}.npz"
    write_atomically(folder / npz_name, lambda tmp: np.savez(tmp, **plain), durable=True)
    files[npz_name] = _describe(folder / npz_name)
    if tensors:
        from safetensors.numpy import save_file

        st_name = f"model-{generation}.safetensors"
        write_atomically(folder / st_name, lambda tmp: save_file(tensors, tmp), durable=True)
        files[st_name] = _describe(folder / st_name)
    doc = {"format": FORMAT, "version": VERSION, "algo": policy.algo, "arms": list(ARMS),
           "dim": policy.dim, "seed": policy.seed, "params": policy.params(), "state": values,
           "features": {"spec": bundle.features.spec.__dict__,
                        "fingerprint": bundle.fingerprint, "names": bundle.features.names},
           "reward": bundle.reward.to_dict(), "meta": {**bundle.meta, **(extra or {})},
           "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
    text = json.dumps(doc, indent=1, sort_keys=True, default=_json_default)
    write_atomically(folder / POLICY_FILE, lambda tmp: Path(tmp).write_text(text + "\n"),
                     durable=True)
    for old in folder.iterdir():        # the last policy's files; a killed save's
        temporary = TEMPORARY.fullmatch(old.name)
        if (LEFTOVERS.fullmatch(old.name) and old.name not in files
                and not (temporary and process_alive(int(temporary.group(1))))):
            old.unlink(missing_ok=True)
    return folder / POLICY_FILE


def load_policy(folder: str | Path, expect_fingerprint: str | None = None) -> PolicyBundle:
    folder = Path(folder)
    path = folder / POLICY_FILE
    if not path.is_file():
        raise InputError("no trained policy here (expected policy.json; train one with "
                         "`searchagent policy train`)", path=str(folder))
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable policy file: {exc}", path=str(path)) from exc
    if not isinstance(doc, dict):
        raise InputError("not a searchagent policy (not a JSON object)", path=str(path))
    if doc.get("format") != FORMAT:
        raise InputError(f"not a searchagent policy (format {doc.get('format')!r})",
                         path=str(path), field="format")
    if doc.get("version") != VERSION:
        raise InputError(f"policy format version {doc.get('version')} is not supported "
                         f"(this build reads version {VERSION}); retrain the policy",
                         path=str(path), field="version")
    with _damage_named(path):
        for key, kind in (("files", dict), ("features", dict), ("reward", dict),
                          ("params", dict), ("state", dict)):
            if key in doc and not isinstance(doc[key], kind):
                raise InputError(f"expected a JSON object, got {type(doc[key]).__name__}",
                                 field=key)
        check_arms(doc["arms"])
        fingerprint = doc["features"]["fingerprint"]
        arrays = _read_arrays(folder, doc["files"])
        features = FeatureMap.from_stored(doc["features"]["spec"], arrays)
        reward = RewardSpec(**doc["reward"])
        policy = make_policy(doc["algo"], int(doc["dim"]), int(doc["seed"]), **doc["params"])
    if features.fingerprint != fingerprint or features.dim != policy.dim:
        raise InputError("stored features do not match the recorded fingerprint "
                         f"{fingerprint} (files mixed from different policies?)",
                         path=str(path), field="features")
    if expect_fingerprint is not None and fingerprint != expect_fingerprint:
        raise InputError(f"policy was trained on feature set {fingerprint} "
                         f"({_describe_spec(doc['features']['spec'])}), but feature set "
                         f"{expect_fingerprint} was expected; retrain it on these features",
                         path=str(path), field="features.fingerprint")
    with _damage_named(path, arrays=True):
        policy.load_state(doc.get("state", {}), arrays)
    return PolicyBundle(policy, features, reward, doc.get("meta", {}))


@contextmanager
def _damage_named(path: Path, arrays: bool = False):
    """A damaged policy (a field of the wrong type, an array the algorithm needs missing
    from its files) as an InputError naming the file and what was wrong, not a traceback."""
    try:
        yield
    except KeyError as exc:
        what = f"array {exc}" if arrays else str(exc)
        raise InputError(f"policy lacks {what}" + (" in its array files" if arrays else ""),
                         path=str(path), field=str(exc.args[0]) if exc.args else None) from exc
    except InputError as exc:
        raise InputError(str(exc), path=str(path)) from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"damaged policy ({'its state' if arrays else 'a field'} does not "
                         f"fit the {'algorithm' if arrays else 'format'}: {exc}); retrain it",
                         path=str(path)) from exc


def _read_arrays(folder: Path, files: dict) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, info in files.items():
        path = folder / name
        if not path.is_file() or _describe(path) != info:
            raise InputError("array file missing or changed since the policy was saved "
                             f"(expected size {info.get('size')} and sha256 "
                             f"{str(info.get('sha256'))[:12]}...)", path=str(path))
        if name.endswith(".safetensors"):
            from safetensors.numpy import load_file

            arrays.update(load_file(str(path)))
        else:
            with np.load(path, allow_pickle=False) as data:
                arrays.update({k: data[k] for k in data.files})
    return arrays


def _describe(path: Path) -> dict:
    return {"size": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _describe_spec(spec: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(spec.items()))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in policy.json")
