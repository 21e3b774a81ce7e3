"""JSON-safe copies of values, for bodies and ``--json`` output that strict parsers read."""

from __future__ import annotations

import json
from typing import Any


def plain(value: Any) -> Any:
    """JSON-safe copy (numpy numbers, tuples, odd objects become plain values; NaN and
    infinities, which JSON has not, become null)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item")
                                 else str(o)), parse_constant=lambda name: None)
