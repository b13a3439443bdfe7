"""torch: fast path (not written yet; every call falls back to the generic core)."""

from __future__ import annotations

from typing import Any

from .._validation import Call

__all__ = ["run"]


def run(kind: str, call: Call, **opts: Any) -> Any:  # noqa: ARG001 - stub
    return NotImplemented
