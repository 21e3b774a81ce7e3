"""Build the systems an evaluation compares: fixed strategies by name, or the agent with a
trained policy. Everything returned has ``run(question, ctx) -> Answer``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path

from searchagent.config import Config
from searchagent.errors import InputError, SearchAgentError


def strategy_names(values: list[str] | None) -> list[str]:
    """``["single,multi", "parametric"]`` -> ``["single", "multi", "parametric"]``."""
    names: list[str] = []
    for value in values or []:
        for name in value.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return names


def make_strategy_system(name: str, searcher, generator, config: Config):
    try:
        factory = importlib.import_module("searchagent.strategies.factory")
    except ImportError as exc:
        raise SearchAgentError("strategies are not available in this build "
                               "(searchagent/strategies/factory.py is missing)") from exc
    return factory.make_strategy(name, searcher, generator, config)


def make_policy_system(policy_dir: str, searcher, generator, config: Config):
    """The agent (``searchagent/agent.py``) choosing an arm per question with a saved policy."""
    if not Path(policy_dir).is_dir():
        raise InputError("policy folder not found", path=policy_dir, field="policy")
    if importlib.util.find_spec("searchagent.agent") is None:
        raise SearchAgentError("--policy needs searchagent/agent.py, which this build lacks")
    agent_module = importlib.import_module("searchagent.agent")
    config = Config.from_dict({**config.to_dict(), "agent": {
        **config.to_dict()["agent"], "strategy": "auto", "policy_dir": str(policy_dir)}})
    if hasattr(agent_module, "make_agent"):
        return agent_module.make_agent(searcher, generator, config)
    return agent_module.Agent(searcher, generator, config)


def policy_label(policy_dir: str) -> str:
    """How a policy system is named in the results table."""
    return f"policy:{Path(policy_dir).resolve().name}"


def policy_fingerprint(policy_dir: str) -> str | None:
    """sha256 of the policy's ``policy.json`` (which holds its arrays' sha256s): a run
    resumed with another policy under the same label is refused (None: no policy there)."""
    path = Path(policy_dir) / "policy.json"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
