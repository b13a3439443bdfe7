"""Run the contract's inputs through softmax-xp and its peers; print a MyST table.

The table itself (the inputs, how softmax-xp and each peer are called) is
``softmax_xp._special_cases``, which the demo and the README's check share;
this script runs it and writes the page. Called by the ``softmax_docs`` Sphinx
extension in a subprocess while the docs are built (so that importing torch
and JAX, and switching JAX to float64, stay out of the Sphinx process). Every cell is computed here, on this machine, at
build time; a peer that does not import gets a "not installed" column.

Run it by hand with ``PYTHONPATH=src python docs/_ext/peers.py``.
"""

from __future__ import annotations

import importlib
import platform
import sys
from typing import Any

import numpy as np

from softmax_xp._special_cases import CASES, PEERS, markdown_header, markdown_row


def _import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return None, f"{type(exc).__name__}"


def _version(module: Any) -> str | None:
    return None if module is None else str(module.__version__)


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")


def main() -> int:
    import softmax_xp as sx

    modules = {p.module: _import(p.module)[0] for p in PEERS}
    jax = modules["jax"]
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
    versions = {
        "softmax-xp": sx.__version__,
        "NumPy": np.__version__,
        "SciPy": _version(modules["scipy"]),
        "torch": _version(modules["torch"]),
        "JAX": _version(jax),
    }
    head = markdown_header(
        f"softmax-xp {sx.__version__}", [_version(modules[p.module]) for p in PEERS]
    )
    _emit(
        "Generated while these docs were built, on "
        f"{platform.machine()} {platform.system()}, Python {platform.python_version()}: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        + ". Peers run on the CPU; JAX with `jax_enable_x64`. An exception's "
        "type is shown where a call raised. softmax-xp runs on NumPy here; "
        "the test suite checks that every backend gives the same answers.\n"
    )
    missing = [k for k, v in versions.items() if v is None]
    if missing:
        _emit(f"Not installed when these docs were built: {', '.join(missing)}.\n")
    present = [p if _import(p.imports)[0] is not None else None for p in PEERS]
    topic = None
    for case in CASES:
        if case.topic != topic:
            topic = case.topic
            _emit(f"\n**{topic.capitalize()}**\n")
            for line in head:
                _emit(line)
        _emit(markdown_row(case, sx, present))
    return 0


if __name__ == "__main__":
    sys.exit(main())
