"""``softmax-xp check``: the contract and a few accuracy checks, on every backend here.

Each check runs on every installed backend and every device it sees. The
expected values are worked out in Python floats (``math``, ``math.fsum``) from
the very inputs given to the backend, never from softmax-xp itself. A check
passes, fails (with what came out), or is skipped (with the reason: the
backend lacks the dtype, say). The exit status is 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backends
from .._backends import Target, describe_error, library, targets
from .._bench import comma_separated

__all__ = ["BACKENDS", "CHECKS", "Check", "run", "run_checks"]

BACKENDS = tuple(b.name for b in _backends.BACKENDS)

INF = math.inf
NAN = math.nan
E = math.e
# the tolerance of value ``i`` whose reference is ``w``: tol(i, w)
Tolerance = Callable[[int, float], float]


class Skip(Exception):
    """This check does not apply to this target (the reason is the message)."""


@dataclass(frozen=True)
class Check:
    name: str
    dtype: str
    body: Callable[[Target, Any, str], str | None]  # None: pass; else what failed

    def label(self) -> str:
        return f"{self.name} [{self.dtype}]"


def _eps(dtype: str) -> float:
    return float(np.finfo(dtype).eps)


def _put(t: Target, values: Any, dtype: str) -> Any:
    if not t.has_dtype(dtype):
        msg = f"{t.backend} on {t.device} has no {dtype}"
        raise Skip(msg)
    return t.put(np.asarray(values, dtype=dtype))


def _compare(what: str, got: Any, want: Sequence[float], tol: Tolerance) -> str | None:
    """``None`` when ``got`` matches ``want``: NaN for NaN, infinities exactly,
    finite values within ``tol(i, want[i])``; else a line saying where not."""
    g = np.asarray(got, dtype=np.float64).reshape(-1)
    if g.size != len(want):
        return f"{what}: {g.size} values, expected {len(want)}"
    for i, (a, w) in enumerate(zip(g.tolist(), want, strict=True)):
        if math.isnan(w):
            ok = math.isnan(a)
        elif math.isinf(w):
            ok = a == w
        else:
            ok = math.isfinite(a) and abs(a - w) <= tol(i, w)
        if not ok:
            return f"{what}[{i}] = {a!r}, expected {w!r}"
    return None


def _few_ulps(dtype: str) -> Tolerance:
    """A few units in the last place of ``dtype``, relative."""
    eps = _eps(dtype)
    return lambda _i, w: 4 * eps * abs(w) + 4 * eps * float(np.finfo(dtype).tiny)


# what a contract check compares, in this order (``want`` holds one reference each)
FUNCTIONS = ("softmax", "log_softmax", "logsumexp")


def _compare_functions(
    t: Target,
    sx: Any,
    x: Any,
    want: Sequence[Sequence[float]],
    dtype: str,
    tol: Tolerance,
    **kw: Any,
) -> str | None:
    """softmax, log_softmax and logsumexp of ``x`` (last axis) against ``want``
    (one reference each, in that order) within ``tol``: the first mismatch, or
    ``None``."""
    for fname, expected in zip(FUNCTIONS, want, strict=True):
        got = t.to_numpy(getattr(sx, fname)(x, axis=-1, **kw))
        if str(got.dtype) != dtype:
            return f"{fname} returned {got.dtype}, expected {dtype}"
        why = _compare(fname, got, expected, tol)
        if why:
            return why
    return None


def _contract(name: str, values: list[float], want: Any, mask: Any = None) -> Any:
    def body(t: Target, sx: Any, dtype: str) -> str | None:
        x = _put(t, values, dtype)
        kw = {} if mask is None else {"where": _put(t, mask, "bool")}
        return _compare_functions(t, sx, x, want, dtype, _few_ulps(dtype), **kw)

    return name, body


_S = 1 + E  # softmax of [0, -inf, 1] and of [1, (nan masked), 2] share it
_CONTRACT = (
    _contract("NaN in the slice", [1.0, NAN, 2.0], ([NAN] * 3, [NAN] * 3, [NAN])),
    _contract(
        "k = 2 entries +inf",
        [INF, 1.0, INF, -INF],
        (
            [0.5, 0.0, 0.5, 0.0],
            [-math.log(2), -INF, -math.log(2), -INF],
            [INF],
        ),
    ),
    _contract(
        "finite with -inf",
        [0.0, -INF, 1.0],
        (
            [1 / _S, 0.0, E / _S],
            [-math.log(_S), -INF, 1 - math.log(_S)],
            [math.log(_S)],
        ),
    ),
    _contract("all -inf", [-INF, -INF], ([0.0, 0.0], [-INF, -INF], [-INF])),
    _contract(
        "all masked", [1.0, 2.0], ([0.0, 0.0], [-INF, -INF], [-INF]), [False, False]
    ),
    _contract(
        "masked NaN ignored",
        [1.0, NAN, 2.0],
        (
            [1 / _S, 0.0, E / _S],
            [-math.log(_S), -INF, 1 - math.log(_S)],
            [1 + math.log(_S)],
        ),
        [True, False, True],
    ),
)


def _empty_axis(t: Target, sx: Any, dtype: str) -> str | None:
    x = t.put(np.zeros((2, 0), dtype=dtype))
    for fname in ("softmax", "log_softmax"):
        got = t.to_numpy(getattr(sx, fname)(x, axis=-1))
        if got.shape != (2, 0):
            return f"{fname} of a (2, 0) array has shape {got.shape}"
    return _compare(
        "logsumexp",
        t.to_numpy(sx.logsumexp(x, axis=-1)),
        [-INF, -INF],
        _few_ulps(dtype),
    )


def _half_zeros(t: Target, sx: Any, dtype: str) -> str | None:
    """70,000 zeros in float16: exp(0) summed past float16's largest finite value."""
    n = 70_000
    x = _put(t, np.zeros(n), dtype)

    # 1 ulp of float16: 2**-10 relative for normal numbers, 2**-24 for the
    # subnormal ones (1/70000 is one of them)
    def tol(_i: int, w: float) -> float:
        return max(2.0**-10 * abs(w), 2.0**-24)

    want = (
        [1 / n] * n,
        [-math.log(n)] * n,
        [math.log(n)],
    )
    return _compare_functions(t, sx, x, want, dtype, tol)


def _lse_tiny(t: Target, sx: Any, dtype: str) -> str | None:
    """logsumexp([0, -40]) = log1p(exp(-40)) = 4.248e-18, not 0."""
    x = _put(t, [0.0, -40.0], dtype)
    want = math.log1p(math.exp(-40.0))
    return _compare("logsumexp", t.to_numpy(sx.logsumexp(x)), [want], _few_ulps(dtype))


def _integer_input(t: Target, sx: Any, dtype: str) -> str | None:
    """Integer input gives the namespace's default real floating dtype."""
    values = [1, 2, 3]
    x = _put(t, values, dtype)
    got = t.to_numpy(sx.softmax(x))
    if str(got.dtype) != t.default_float:
        return f"softmax of {dtype} returned {got.dtype}, expected {t.default_float}"
    s = math.fsum(math.exp(v - 3) for v in values)
    want = [math.exp(v - 3) / s for v in values]
    return _compare("softmax", got, want, _few_ulps(t.default_float))


# --- accuracy spot checks: 4 rows of 33 values, spread over about +-15 ---


def _spot_values(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(20260501)
    return (rng.standard_normal((4, 33)) * 5).astype(dtype)


def _ref_rows(x: np.ndarray, fname: str) -> tuple[list[float], list[float]]:
    """(reference values, |x_i - max| per value) in Python floats, row by row."""
    want: list[float] = []
    spread: list[float] = []
    for row in x.astype(np.float64).tolist():
        r = [-v for v in row] if fname == "softmin" else row
        m = max(r)
        s = math.fsum(math.exp(v - m) for v in r)
        if fname == "logsumexp":
            want.append(m + math.log(s))
            spread.append(0.0)
            continue
        for v in r:
            want.append(
                math.exp(v - m) / s if fname != "log_softmax" else v - m - math.log(s)
            )
            spread.append(abs(v - m))
    return want, spread


def _spot(fname: str) -> Callable[[Target, Any, str], str | None]:
    def body(t: Target, sx: Any, dtype: str) -> str | None:
        values = _spot_values(dtype)
        x = _put(t, values, dtype)
        got = t.to_numpy(getattr(sx, fname)(x, axis=-1))
        if str(got.dtype) != dtype:
            return f"{fname} returned {got.dtype}, expected {dtype}"
        want, spread = _ref_rows(values, fname)
        eps = _eps(dtype)

        # rounding x - max in the input dtype costs up to |x - max| * eps / 2
        # (relative, in exp); a few eps more for the sum and the division
        def tol(i: int, w: float) -> float:
            if fname == "log_softmax":
                return eps * (8 * abs(w) + spread[i] + 1)
            return eps * (8 + spread[i]) * abs(w)

        return _compare(fname, got, want, tol)

    return body


def _checks() -> tuple[Check, ...]:
    out: list[Check] = []
    for dtype in ("float32", "float64"):
        for name, body in _CONTRACT:
            out.append(Check(f"contract: {name}", dtype, body))
        out.append(Check("contract: empty axis", dtype, _empty_axis))
        out.append(Check("logsumexp([0, -40]) = 4.248e-18", dtype, _lse_tiny))
    out.append(Check("float16 row of 70,000 zeros", "float16", _half_zeros))
    out.append(Check("integer input -> default float", "int32", _integer_input))
    for dtype in ("float32", "float64"):
        for fname in ("softmax", "log_softmax", "softmin", "logsumexp"):
            out.append(Check(f"accuracy: {fname}", dtype, _spot(fname)))
    return tuple(out)


CHECKS = _checks()


def run_checks(backends: Sequence[str]) -> dict[str, Any]:
    """Every check on every device of ``backends``: JSON-able results."""
    import softmax_xp as sx

    if "jax" in backends:
        jax = library("jax", "jax").module
        if jax is not None:
            # float64 is part of the contract: JAX keeps it only with x64
            jax.config.update("jax_enable_x64", True)
    results: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    for backend in backends:
        found, why = targets(backend)
        if why is not None:
            unavailable.append({"backend": backend, "reason": why})
        for t in found:
            for c in CHECKS:
                try:
                    detail = c.body(t, sx, c.dtype)
                    status = "pass" if detail is None else "FAIL"
                except Skip as exc:
                    status, detail = "skip", str(exc)
                except Exception as exc:  # noqa: BLE001 - a raise is a failure, reported
                    status, detail = "FAIL", f"raised {describe_error(exc)}"
                results.append(
                    {
                        "backend": t.backend,
                        "device": t.device,
                        "check": c.name,
                        "dtype": c.dtype,
                        "status": status,
                        "detail": detail,
                    }
                )
    counts = {
        s: sum(r["status"] == s for r in results) for s in ("pass", "FAIL", "skip")
    }
    return {
        "softmax_xp": sx.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "results": results,
        "unavailable": unavailable,
        "summary": {
            "passed": counts["pass"],
            "failed": counts["FAIL"],
            "skipped": counts["skip"],
            "targets": sorted({f"{r['backend']} ({r['device']})" for r in results}),
        },
    }


def format_results(data: dict[str, Any]) -> str:
    lines = [
        (
            f"softmax-xp {data['softmax_xp']} self-check, Python {data['python']} "
            f"on {data['platform']}"
        ),
    ]
    current = None
    for r in data["results"]:
        where = f"{r['backend']} ({r['device']})"
        if where != current:
            lines += ["", where]
            current = where
        text = f"  {r['status'].upper():<5} {r['check']:<36} {r['dtype']:<8}"
        if r["detail"]:
            text += f" {r['detail']}"
        lines.append(text.rstrip())
    if data["unavailable"]:
        lines.append("")
        for u in data["unavailable"]:
            lines.append(f"{u['backend']}: SKIP ({u['reason']})")
    s = data["summary"]
    verdict = "FAILED" if s["failed"] else "OK"
    lines += [
        "",
        (
            f"summary: {verdict}: {s['passed']} passed, {s['failed']} failed, "
            f"{s['skipped']} skipped on {len(s['targets'])} backend/device pair(s)"
        ),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backends",
        type=comma_separated(BACKENDS),
        default=BACKENDS,
        metavar="LIST",
        help=f"comma-separated, default every one installed: {','.join(BACKENDS)}",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the results as JSON instead"
    )


def run(args: argparse.Namespace) -> int:
    data = run_checks(args.backends)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_results(data))
    return 1 if data["summary"]["failed"] else 0
