"""``softmax-xp demo``: the stable formula against the naive one, on every backend.

The backends are the registry's (:mod:`softmax_xp._backends`), each imported
only here, when the demo runs; one that fails to import or to compute is
reported on its line and the demo goes on. The special cases, and how each peer
is asked them, are the table of :mod:`softmax_xp._special_cases`.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _special_cases as cases
from ._backends import BACKENDS, Backend, describe_error, library, targets

__all__ = ["run_demo"]

SMALL = [0.3, 2.9, 4.0]
LARGE = [1010.0, 1000.0, 990.0]
# the cases of the special-case table the demo shows: softmax-xp alone, then
# beside the peers
OURS = (
    cases.INF_AND_FINITE,
    cases.ALL_MINUS_INF,
    cases.ALL_MASKED,
    cases.TINY_LOGSUMEXP,
)
BESIDE_PEERS = (
    cases.ALL_MINUS_INF,
    cases.INF_AND_FINITE,
    cases.ALL_MASKED,
    cases.FLOAT16_ZEROS,
)


def _fmt(a: Any) -> str:
    return np.array2string(np.asarray(a), separator=" ")


def _reference(values: list[float]) -> np.ndarray:
    """softmax in float64 NumPy, written out, to compare every backend against."""
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


def _backend_line(backend: Backend, softmax: Callable[..., Any]) -> str:
    """One line: this backend's softmax of LARGE on its first device, or why none."""
    label = f"  {backend.name:<17}"
    lib = library(backend.name, backend.dist or backend.name)
    if lib.version is None:
        return f"{label}{lib.status}"
    found, why = targets(backend.name)
    if not found:
        return f"{label}failed ({why})"
    try:
        # in the backend's default float, as a Python list would give
        x = found[0].put(np.asarray(LARGE, dtype=found[0].default_float))
        y = found[0].to_numpy(softmax(x))
    except Exception as exc:  # noqa: BLE001 - e.g. cupy installed without a GPU
        return f"{label}failed ({describe_error(exc)})"
    ref = _reference(LARGE)
    err = float(np.max(np.abs(y.astype(np.float64) - ref) / ref))
    return (
        f"{label}{lib.version:<12} {y.dtype!s:<8} {_fmt(y)}  max rel. error {err:.1e}"
    )


def run_demo() -> int:
    """Print the demo; return the process exit status."""
    import softmax_xp as sx

    print(
        f"softmax-xp {sx.__version__}: softmax(x) = exp(x - max x) / sum exp(x - max x)"
    )
    print()
    print(f"NumPy {np.__version__}")
    for values in (SMALL, LARGE):
        text = f"softmax({values})"
        print(f"  {text:<32} -> {_fmt(sx.softmax(np.asarray(values)))}")
    x = np.asarray(LARGE)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(x) / np.sum(np.exp(x))
    print(f"  naive exp(x) / sum exp(x) on the same x -> {_fmt(naive)} (exp overflows)")
    print()
    print("Special values (no NaN comes out unless a NaN went in):")
    for case in OURS:
        try:
            result = _fmt(case.ours(sx))
        except Exception as exc:  # noqa: BLE001 - the demo reports, never crashes
            result = f"failed ({describe_error(exc)})"
        print(f"  {case.call:<42} -> {result}")
    print()
    print(
        f"The same call, softmax({LARGE}), on the other backends (their default float):"
    )
    for backend in BACKENDS:
        if backend.name != "numpy":
            print(_backend_line(backend, sx.softmax))
    print()
    print("The special cases beside the peers (each library run now, on NumPy input):")
    peers = [p for p in cases.PEERS if importlib.util.find_spec(p.module)]
    if not peers:
        print("  (scipy, torch and jax are not installed here: no peer to show)")
    for case in BESIDE_PEERS:
        print(f"  case: {case.title or case.call}")
        print(f"    {'softmax-xp':<30}{_outcome(functools.partial(case.ours, sx))}")
        for peer in peers:
            outcome = _outcome(functools.partial(peer.run, case))
            print(f"    {peer.label(case):<30}{outcome}")
    return 0


def _summary(a: Any) -> str:
    """A short text for one result: the values, or for a long row a digest."""
    y = np.asarray(a)
    if y.size <= 4:
        return _fmt(y)
    wide = y.astype(np.float64)
    nans = int(np.isnan(wide).sum())
    if nans:
        return f"{y.dtype}: {nans} of {y.size} values NaN"
    first = float(wide.reshape(-1)[0])
    same = "all" if bool(np.all(wide == first)) else "first"
    return f"{y.dtype}: {same} {first:.4g}, sum {float(np.sum(wide)):.4g}"


def _outcome(call: Callable[[], Any]) -> str:
    try:
        # a peer's overflow and invalid-value warnings are what the NaN in its
        # result already shows
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return _summary(cases.to_numpy(call()))
    except Exception as exc:  # noqa: BLE001 - the demo reports, never crashes
        return f"raised {describe_error(exc)}"
