"""The arms a policy chooses between, in a fixed order shared by every policy."""

from __future__ import annotations

from searchagent.errors import InputError
from searchagent.strategies.base import ARMS

__all__ = ["ARMS", "arm_index", "check_arms"]


def arm_index(arm: str) -> int:
    """Position of ``arm`` in ``ARMS``; a clear error for an unknown name."""
    try:
        return ARMS.index(arm)
    except ValueError:
        raise InputError(f"unknown arm {arm!r} (choose from {', '.join(ARMS)})",
                         field="arm") from None


def check_arms(arms) -> tuple[str, ...]:
    """Validate a stored arm list: a policy trained on other arms cannot be served."""
    arms = tuple(arms)
    if arms != ARMS:
        raise InputError(f"policy was trained on arms {list(arms)}, this build serves "
                         f"{list(ARMS)}", field="arms")
    return arms
