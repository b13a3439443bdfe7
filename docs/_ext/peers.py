"""Run the contract's inputs through softmax-xp and its peers; print a MyST table.

Called by the ``softmax_docs`` Sphinx extension in a subprocess while the docs
are built (so that importing torch and JAX, and switching JAX to float64, stay
out of the Sphinx process). Every cell is computed here, on this machine, at
build time; a peer that does not import gets a "not installed" column.

Run it by hand with ``PYTHONPATH=src python docs/_ext/peers.py``.
"""

from __future__ import annotations

import importlib
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INF = float("inf")
NAN = float("nan")


@dataclass(frozen=True)
class Case:
    """One input and how each library is asked about it."""

    topic: str
    what: str
    ours: Callable[[Any, Any], Any]
    scipy: Callable[[Any, Any], Any] | None
    torch: Callable[[Any], Any] | None
    jax: Callable[[Any, Any], Any] | None
    show: str = "values"  # "values", "dtype" or "first-and-sum"
    note: str = ""


def _f64(xp: Any, values: list[float]) -> Any:
    return xp.asarray(values, dtype=xp.float64)


def _fill_masked(np_: Any, x: list[float], keep: list[bool]) -> Any:
    """What a caller without ``where=`` writes: masked entries become -inf."""
    return np_.where(np_.asarray(keep), np_.asarray(x, dtype=np_.float64), -INF)


def _tfill(torch: Any, x: list[float], keep: list[bool]) -> Any:
    t = torch.tensor(x, dtype=torch.float64)
    return t.masked_fill(~torch.tensor(keep), -INF)


HALF = 70_000

CASES: list[Case] = [
    # --- special values
    Case(
        "special values",
        "`softmax([1010, 1000, 990])`",
        lambda sx, np_: sx.softmax(_f64(np_, [1010, 1000, 990])),
        lambda sp, np_: sp.softmax(_f64(np_, [1010, 1000, 990])),
        lambda t: t.softmax(_f64(t, [1010, 1000, 990]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1010, 1000, 990])),
    ),
    Case(
        "special values",
        "`softmax([inf, 1])`",
        lambda sx, np_: sx.softmax(_f64(np_, [INF, 1])),
        lambda sp, np_: sp.softmax(_f64(np_, [INF, 1])),
        lambda t: t.softmax(_f64(t, [INF, 1]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [INF, 1])),
    ),
    Case(
        "special values",
        "`softmax([inf, inf, 1])`",
        lambda sx, np_: sx.softmax(_f64(np_, [INF, INF, 1])),
        lambda sp, np_: sp.softmax(_f64(np_, [INF, INF, 1])),
        lambda t: t.softmax(_f64(t, [INF, INF, 1]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [INF, INF, 1])),
    ),
    Case(
        "special values",
        "`softmax([-inf, -inf])`",
        lambda sx, np_: sx.softmax(_f64(np_, [-INF, -INF])),
        lambda sp, np_: sp.softmax(_f64(np_, [-INF, -INF])),
        lambda t: t.softmax(_f64(t, [-INF, -INF]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [-INF, -INF])),
    ),
    Case(
        "special values",
        "`softmax([nan, 1])`",
        lambda sx, np_: sx.softmax(_f64(np_, [NAN, 1])),
        lambda sp, np_: sp.softmax(_f64(np_, [NAN, 1])),
        lambda t: t.softmax(_f64(t, [NAN, 1]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [NAN, 1])),
    ),
    Case(
        "special values",
        "`softmax([])` (empty slice)",
        lambda sx, np_: sx.softmax(_f64(np_, [])),
        lambda sp, np_: sp.softmax(_f64(np_, [])),
        lambda t: t.softmax(_f64(t, []), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [])),
    ),
    Case(
        "special values",
        "`log_softmax([inf, 1])`",
        lambda sx, np_: sx.log_softmax(_f64(np_, [INF, 1])),
        lambda sp, np_: sp.log_softmax(_f64(np_, [INF, 1])),
        lambda t: t.log_softmax(_f64(t, [INF, 1]), dim=-1),
        lambda jnn, jnp: jnn.log_softmax(_f64(jnp, [INF, 1])),
    ),
    Case(
        "special values",
        "`log_softmax([-inf, -inf])`",
        lambda sx, np_: sx.log_softmax(_f64(np_, [-INF, -INF])),
        lambda sp, np_: sp.log_softmax(_f64(np_, [-INF, -INF])),
        lambda t: t.log_softmax(_f64(t, [-INF, -INF]), dim=-1),
        lambda jnn, jnp: jnn.log_softmax(_f64(jnp, [-INF, -INF])),
    ),
    Case(
        "special values",
        "`logsumexp([0, -40])` (exact: 4.2484e-18)",
        lambda sx, np_: sx.logsumexp(_f64(np_, [0, -40])),
        lambda sp, np_: sp.logsumexp(_f64(np_, [0, -40])),
        lambda t: t.logsumexp(_f64(t, [0, -40]), dim=-1),
        lambda jnn, jnp: jnn.logsumexp(_f64(jnp, [0, -40])),
    ),
    Case(
        "special values",
        "`logsumexp([inf, -inf])`",
        lambda sx, np_: sx.logsumexp(_f64(np_, [INF, -INF])),
        lambda sp, np_: sp.logsumexp(_f64(np_, [INF, -INF])),
        lambda t: t.logsumexp(_f64(t, [INF, -INF]), dim=-1),
        lambda jnn, jnp: jnn.logsumexp(_f64(jnp, [INF, -INF])),
    ),
    Case(
        "special values",
        "`logsumexp([-inf, -inf])`",
        lambda sx, np_: sx.logsumexp(_f64(np_, [-INF, -INF])),
        lambda sp, np_: sp.logsumexp(_f64(np_, [-INF, -INF])),
        lambda t: t.logsumexp(_f64(t, [-INF, -INF]), dim=-1),
        lambda jnn, jnp: jnn.logsumexp(_f64(jnp, [-INF, -INF])),
    ),
    Case(
        "special values",
        "`logsumexp([])`",
        lambda sx, np_: sx.logsumexp(_f64(np_, [])),
        lambda sp, np_: sp.logsumexp(_f64(np_, [])),
        lambda t: t.logsumexp(_f64(t, []), dim=-1),
        lambda jnn, jnp: jnn.logsumexp(_f64(jnp, [])),
    ),
    # --- masks
    Case(
        "masks",
        "`softmax([1, 2, 3], where=[T, T, F])`",
        lambda sx, np_: sx.softmax(
            _f64(np_, [1, 2, 3]), where=np_.asarray([True, True, False])
        ),
        lambda sp, np_: sp.softmax(_fill_masked(np_, [1, 2, 3], [True, True, False])),
        lambda t: t.softmax(_tfill(t, [1, 2, 3], [True, True, False]), dim=-1),
        lambda jnn, jnp: jnn.softmax(
            _f64(jnp, [1, 2, 3]), where=jnp.asarray([True, True, False])
        ),
    ),
    Case(
        "masks",
        "`softmax([1, 2], where=[F, F])` (fully masked)",
        lambda sx, np_: sx.softmax(_f64(np_, [1, 2]), where=np_.asarray([False] * 2)),
        lambda sp, np_: sp.softmax(_fill_masked(np_, [1, 2], [False, False])),
        lambda t: t.softmax(_tfill(t, [1, 2], [False, False]), dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1, 2]), where=jnp.asarray([False] * 2)),
    ),
    Case(
        "masks",
        "`softmax([nan, 1], where=[F, T])` (NaN masked out)",
        lambda sx, np_: sx.softmax(
            _f64(np_, [NAN, 1]), where=np_.asarray([False, True])
        ),
        lambda sp, np_: sp.softmax(_fill_masked(np_, [NAN, 1], [False, True])),
        lambda t: t.softmax(_tfill(t, [NAN, 1], [False, True]), dim=-1),
        lambda jnn, jnp: jnn.softmax(
            _f64(jnp, [NAN, 1]), where=jnp.asarray([False, True])
        ),
    ),
    # --- temperature
    Case(
        "temperature",
        "`softmax([1, 2, 3], temperature=0.5)`",
        lambda sx, np_: sx.softmax(_f64(np_, [1, 2, 3]), temperature=0.5),
        lambda sp, np_: sp.softmax(_f64(np_, [1, 2, 3]) / 0.5),
        lambda t: t.softmax(_f64(t, [1, 2, 3]) / 0.5, dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1, 2, 3]) / 0.5),
        note="peers: `x / 0.5`",
    ),
    # --- dtypes
    Case(
        "dtypes",
        "`softmax` of 70,000 float16 zeros: first entry, sum",
        lambda sx, np_: sx.softmax(np_.zeros(HALF, dtype=np_.float16)),
        lambda sp, np_: sp.softmax(np_.zeros(HALF, dtype=np_.float16)),
        lambda t: t.softmax(t.zeros(HALF, dtype=t.float16), dim=-1),
        lambda jnn, jnp: jnn.softmax(jnp.zeros(HALF, dtype=jnp.float16)),
        show="first-and-sum",
    ),
    Case(
        "dtypes",
        "dtype of `softmax(float16 [1, 2])`",
        lambda sx, np_: sx.softmax(np_.asarray([1, 2], dtype=np_.float16)),
        lambda sp, np_: sp.softmax(np_.asarray([1, 2], dtype=np_.float16)),
        lambda t: t.softmax(t.tensor([1, 2], dtype=t.float16), dim=-1),
        lambda jnn, jnp: jnn.softmax(jnp.asarray([1, 2], dtype=jnp.float16)),
        show="dtype",
    ),
    Case(
        "dtypes",
        "dtype of `softmax(float32 [1, 2])`",
        lambda sx, np_: sx.softmax(np_.asarray([1, 2], dtype=np_.float32)),
        lambda sp, np_: sp.softmax(np_.asarray([1, 2], dtype=np_.float32)),
        lambda t: t.softmax(t.tensor([1, 2], dtype=t.float32), dim=-1),
        lambda jnn, jnp: jnn.softmax(jnp.asarray([1, 2], dtype=jnp.float32)),
        show="dtype",
    ),
    Case(
        "dtypes",
        "dtype of `softmax(int64 [1, 2])`",
        lambda sx, np_: sx.softmax(np_.asarray([1, 2], dtype=np_.int64)),
        lambda sp, np_: sp.softmax(np_.asarray([1, 2], dtype=np_.int64)),
        lambda t: t.softmax(t.tensor([1, 2], dtype=t.int64), dim=-1),
        lambda jnn, jnp: jnn.softmax(jnp.asarray([1, 2], dtype=jnp.int64)),
        show="dtype",
    ),
    Case(
        "dtypes",
        "`softmax(complex [1, 2])`",
        lambda sx, np_: sx.softmax(np_.asarray([1, 2], dtype=np_.complex128)),
        lambda sp, np_: sp.softmax(np_.asarray([1, 2], dtype=np_.complex128)),
        lambda t: t.softmax(t.tensor([1, 2], dtype=t.complex128), dim=-1),
        lambda jnn, jnp: jnn.softmax(jnp.asarray([1, 2], dtype=jnp.complex128)),
    ),
    # --- axes
    Case(
        "axes",
        "`softmax(ones((2, 2)), axis=(0, 1))`",
        lambda sx, np_: sx.softmax(np_.ones((2, 2)), axis=(0, 1)),
        lambda sp, np_: sp.softmax(np_.ones((2, 2)), axis=(0, 1)),
        lambda t: t.softmax(t.ones((2, 2), dtype=t.float64), dim=(0, 1)),
        lambda jnn, jnp: jnn.softmax(jnp.ones((2, 2)), axis=(0, 1)),
    ),
    Case(
        "axes",
        "`logsumexp(ones((2, 2)))` (default axis)",
        lambda sx, np_: sx.logsumexp(np_.ones((2, 2))),
        lambda sp, np_: sp.logsumexp(np_.ones((2, 2))),
        lambda t: t.logsumexp(t.ones((2, 2), dtype=t.float64), dim=-1),
        lambda jnn, jnp: jnn.logsumexp(jnp.ones((2, 2))),
        note="torch has no default: `dim=-1` passed",
    ),
    # --- errors
    Case(
        "errors",
        "`softmax([1, 2], axis=1)`",
        lambda sx, np_: sx.softmax(_f64(np_, [1, 2]), axis=1),
        lambda sp, np_: sp.softmax(_f64(np_, [1, 2]), axis=1),
        lambda t: t.softmax(_f64(t, [1, 2]), dim=1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1, 2]), axis=1),
    ),
    Case(
        "errors",
        "`softmax(x, axis=1.0)`",
        lambda sx, np_: sx.softmax(_f64(np_, [1, 2]), axis=1.0),
        lambda sp, np_: sp.softmax(_f64(np_, [1, 2]), axis=1.0),
        lambda t: t.softmax(_f64(t, [1, 2]), dim=1.0),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1, 2]), axis=1.0),
    ),
    Case(
        "errors",
        "`softmax(x, temperature=0)`",
        lambda sx, np_: sx.softmax(_f64(np_, [1, 2]), temperature=0),
        lambda sp, np_: sp.softmax(_f64(np_, [1, 2]) / 0),
        lambda t: t.softmax(_f64(t, [1, 2]) / 0, dim=-1),
        lambda jnn, jnp: jnn.softmax(_f64(jnp, [1, 2]) / 0),
        note="peers: `x / 0`",
    ),
]


def _fmt_float(v: float) -> str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.7g}"


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    return np.asarray(value)


def _dtype_name(value: Any) -> str:
    return str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")


def _cell(fn: Callable[[], Any], show: str) -> str:
    try:
        with np.errstate(all="ignore"):
            value = fn()
    except Exception as exc:  # noqa: BLE001 - the table reports what each library raises
        return f"`{type(exc).__name__}`"
    if show == "dtype":
        return f"`{_dtype_name(value)}`"
    arr = _to_numpy(value)
    if np.iscomplexobj(arr):
        return f"complex `{arr.dtype}`"
    if show == "first-and-sum":
        total = float(np.sum(arr.astype(np.float64)))
        return f"`{_fmt_float(float(arr.ravel()[0]))}`, sum `{_fmt_float(total)}`"
    flat = arr.astype(np.float64).ravel()
    if arr.ndim == 0:
        return f"`{_fmt_float(float(flat[0]))}`"
    return "`[" + ", ".join(_fmt_float(float(v)) for v in flat) + "]`"


def _import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return None, f"{type(exc).__name__}"


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")


def main() -> int:
    import softmax_xp as sx

    sp, _ = _import("scipy.special")
    scipy, _ = _import("scipy")
    torch, _ = _import("torch")
    jax, _ = _import("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        import jax.nn as jnn
        import jax.numpy as jnp
    versions = {
        "softmax-xp": sx.__version__,
        "NumPy": np.__version__,
        "SciPy": scipy.__version__ if scipy else None,
        "torch": torch.__version__ if torch else None,
        "JAX": jax.__version__ if jax else None,
    }
    head = ["input (float64 unless stated)", f"softmax-xp {sx.__version__}"]
    for label, mod in (
        ("`scipy.special`", scipy),
        ("`torch`", torch),
        ("`jax.nn`", jax),
    ):
        head.append(f"{label} {mod.__version__}" if mod else f"{label}")
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
    topic = None
    for case in CASES:
        if case.topic != topic:
            topic = case.topic
            _emit(f"\n**{topic.capitalize()}**\n")
            _emit("| " + " | ".join(head) + " |")
            _emit("|" + "---|" * len(head))
        row = [case.what + (f" ({case.note})" if case.note else "")]
        row.append(_cell(lambda c=case: c.ours(sx, np), case.show))
        row.append(
            "not installed"
            if sp is None or case.scipy is None
            else _cell(lambda c=case: c.scipy(sp, np), case.show)
        )
        row.append(
            "not installed"
            if torch is None or case.torch is None
            else _cell(lambda c=case: c.torch(torch), case.show)
        )
        row.append(
            "not installed"
            if jax is None or case.jax is None
            else _cell(lambda c=case: c.jax(jnn, jnp), case.show)
        )
        _emit("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
