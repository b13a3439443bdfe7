"""Worst-case accuracy against mpmath (docs/contract.md, "Accuracy"), on every backend.

Rows are drawn with seeded NumPy generators in several widths and value
ranges, rounded to the dtype under test (so the input itself is exact), and
compared element by element with the mpmath references of ``_reference``.
Two measures: "ulp" is the error in units in the last place of each exact
value in the dtype under test; "rel-ulp" is the relative error in units of
the dtype's epsilon ``2**(1-p)`` (at most the ulp error, as little as half).

The bounds tested:

- float16 / bfloat16 (computed in float32, rounded once): softmax and
  log_softmax within 1 ulp of the exact value; logsumexp within 1 ulp plus
  the cancellation allowance below.
- float32 / float64 softmax and log_softmax: within 4 rel-ulp of the exact
  result for ``fl(x - max)``, the shift rounded in the input dtype. The
  contract lets that one rounding cost more than a few ulp: on
  ``uniform(-1000, 1000)`` it alone is worth ~100 ulp of softmax in float64,
  and it reaches the largest log-probability ``-log1p(s')`` through ``s'``
  (where ``x - max`` is exact, e.g. ``[1010, 1000, 990]``, the two references
  agree). The budget covers the backend's ``exp`` and ``log1p`` (NumPy's
  float32 SIMD ``exp`` is documented at up to 2.52 ulp), the sum and the
  division. The report also gives log_softmax's worst error against the exact
  value of the unrounded row.
- logsumexp: within 2 ulp of the exact value, plus a cancellation allowance
  where ``m < 0`` and the result is small: ``m + log1p(s')`` then magnifies
  the error of ``log1p(s')`` by ``r = ulp(log1p(s')) / ulp(lse)`` (the
  problem's condition number ``sum |x_i| p_i / |lse|`` is large), and no
  working-precision evaluation of the log1p form does better; the allowance is
  ``2 (r - 1)`` ulp when ``r > 1`` (ulp of ``log1p(s')`` in the compute dtype,
  float32 for half inputs), 0 otherwise, so it never applies when ``m >= 0``.
  The report gives the worst error beyond it.
- Everywhere: an entry whose exact value is below the smallest normal number
  of the compute dtype is held to an absolute error of that number instead
  (flush-to-zero backends, XLA on the CPU among them, return 0 there). Such
  entries are left out of the reported worst errors.

The worst errors measured are printed when the module finishes (run pytest
with ``-s``) and, if ``SOFTMAX_XP_ACCURACY_JSON`` names a file, written there
as JSON.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")

from _helpers import generic
from _reference import (
    DD,
    FORMATS,
    mp_reference,
    rel_error,
    rounded_shift,
    to_dd,
    ulp,
    ulp_error,
)

import softmax_xp as sx

FUNCS = ("softmax", "log_softmax", "logsumexp")
DTYPES = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")
WIDTHS = (1, 2, 7, 100, 1000)
# rows per case and width (the mpmath references of the widest rows dominate
# the run time); Dask, slow per call, takes fewer
ROWS = {1: 4, 2: 4, 7: 4, 100: 4, 1000: 2}
DASK_ROWS = {1: 2, 2: 2, 7: 2, 100: 2, 1000: 1}

HALF_ULPS = 1.0
SOFTMAX_REL_ULPS = 4.0
LOG_SOFTMAX_REL_ULPS = 4.0
LOGSUMEXP_ULPS = 2.0
CANCELLATION_ULPS = 2.0  # per magnification of log1p(s')'s error, see the docstring

# worst errors measured: {(backend, function, dtype): {...}}
WORST: dict[tuple[str, str, str], dict[str, Any]] = {}


def _compute_emin(dtype: str) -> int:
    """Smallest normal exponent of the dtype the computation runs in."""
    return FORMATS["float32" if dtype in HALF else dtype][1]


def _round_to(a: Any, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` (a NumPy or ml_dtypes array of that dtype)."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16)
    return np.asarray(a).astype(dtype)


def _spacing(v: np.ndarray, dtype: str) -> np.ndarray:
    p, emin = FORMATS[dtype]
    e = np.floor(np.log2(np.maximum(np.abs(v), 2.0**emin)))
    return 2.0 ** (e - p + 1)


def _normal1(rng: np.random.Generator, shape: tuple[int, int], dt: str) -> Any:
    return rng.normal(0.0, 1.0, shape)


def _normal30(rng: np.random.Generator, shape: tuple[int, int], dt: str) -> Any:
    return rng.normal(0.0, 30.0, shape)


def _uniform1000(rng: np.random.Generator, shape: tuple[int, int], dt: str) -> Any:
    return rng.uniform(-1000.0, 1000.0, shape)


def _dominant(rng: np.random.Generator, shape: tuple[int, int], dt: str) -> Any:
    # one entry 5 to 60 above the rest (like [0, -40, ...]), with and without
    # a large offset (like [1010, 1000, 990])
    x = -rng.uniform(5.0, 60.0, shape)
    x[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = 0.0
    return x + rng.choice([0.0, 1000.0, -300.0], size=(shape[0], 1))


def _near_ties(rng: np.random.Generator, shape: tuple[int, int], dt: str) -> Any:
    # entries a few ulp of the dtype apart around a random centre
    base = _round_to(rng.normal(0.0, 10.0, (shape[0], 1)), dt).astype(np.float64)
    return base + rng.integers(-3, 4, shape) * _spacing(base, dt)


CASES = {
    "normal(0,1)": _normal1,
    "normal(0,30)": _normal30,
    "uniform(-1000,1000)": _uniform1000,
    "dominant": _dominant,
    "near-ties": _near_ties,
    "masked": _normal30,  # plus a random mask over garbage, see Batch
}


class Batch:
    """The rows of one width and dtype, every case stacked, and their exact results.

    The unmasked cases share one batch (one call per function), the masked
    case has its own (``where`` given).
    """

    def __init__(self, width: int, dtype: str, masked: bool) -> None:
        names = ["masked"] if masked else [c for c in CASES if c != "masked"]
        self.dtype = dtype
        self.width = width
        self.labels = np.repeat(names, ROWS[width])
        parts = []
        for case in names:
            seed = [list(CASES).index(case), width, DTYPES.index(dtype)]
            rng = np.random.default_rng(seed)
            shape = (ROWS[width], width)
            parts.append(_round_to(CASES[case](rng, shape, dtype), dtype))
        self.x = np.concatenate(parts)  # in the dtype (ml_dtypes for bfloat16)
        self.x64 = self.x.astype(np.float64)
        self.x_in = self.x64  # what the backend receives (cast to dtype, exact)
        self.where: np.ndarray | None = None
        if masked:
            shape = self.x.shape
            keep = rng.random(shape) < 0.7
            keep[np.arange(shape[0]), rng.integers(0, width, shape[0])] = True
            self.where = keep
            # masked entries hold garbage that must be ignored
            garbage = rng.choice([np.nan, np.inf, -np.inf, 1e4], size=shape)
            self.x_in = np.where(keep, self.x64, garbage)
        self._cache: dict[tuple[str, bool], DD] = {}
        self.log1p_s: DD | None = None

    def rows(self, lazy: bool) -> np.ndarray:
        """The rows a backend gets: all of them, or ``DASK_ROWS`` per case."""
        idx = np.arange(self.x.shape[0])
        return idx[idx % ROWS[self.width] < DASK_ROWS[self.width]] if lazy else idx

    def _where(self, i: int) -> np.ndarray | None:
        return None if self.where is None else self.where[i]

    def _refs(self, shifted: bool) -> list[Any]:
        n = self.x.shape[0]
        rows = [
            rounded_shift(self.x[i], self._where(i)) if shifted else self.x[i]
            for i in range(n)
        ]
        return [mp_reference(r, self._where(i)) for i, r in enumerate(rows)]

    def exact(self, func: str, *, shifted: bool = False) -> DD:
        """Exact results of ``func`` per row (of ``fl(x - max)`` if ``shifted``)."""
        key = (func, shifted)
        if key not in self._cache:
            vals = [getattr(r, func) for r in self._refs(shifted)]
            self._cache[key] = to_dd(np.array(vals, dtype=object))
        return self._cache[key]

    def reference(self, func: str) -> DD:
        """The reference the bound of ``func`` in this dtype is tested against."""
        shifted = func != "logsumexp" and self.dtype not in HALF
        return self.exact(func, shifted=shifted)

    def allowance(self) -> np.ndarray:
        """The cancellation allowance of logsumexp, in ulp of the exact result."""
        lse = self.exact("logsumexp")
        # the logsumexp of fl(x - max) is log1p(s') (up to that rounding)
        log1p_s = self.exact("logsumexp", shifted=True)
        compute = "float32" if self.dtype in HALF else self.dtype
        # how much the final addition m + log1p(s') magnifies log1p(s')'s
        # error: none while |lse| >= log1p(s') (m >= 0)
        ratio = ulp(log1p_s, compute) / ulp(lse, self.dtype)
        return CANCELLATION_ULPS * np.maximum(ratio - 1.0, 0.0)


@functools.cache
def _batch(width: int, dtype: str, masked: bool) -> Batch:
    return Batch(width, dtype, masked)


def _take(dd: DD, rows: np.ndarray) -> DD:
    return DD(dd.hi[rows], dd.lo[rows])


def _measure(
    func: str, dtype: str, actual: np.ndarray, exact: DD, allowance: Any = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(error, bound, error as reported) per element, as the docstring says."""
    if dtype in HALF:
        err, bound = ulp_error(actual, exact, dtype), HALF_ULPS
    elif func == "softmax":
        err, bound = rel_error(actual, exact, dtype), SOFTMAX_REL_ULPS
    elif func == "log_softmax":
        err, bound = rel_error(actual, exact, dtype), LOG_SOFTMAX_REL_ULPS
    else:
        err, bound = ulp_error(actual, exact, dtype), LOGSUMEXP_ULPS
    bound = np.full(err.shape, bound) + (allowance if func == "logsumexp" else 0.0)
    # below the compute dtype's normal range: absolute error up to its
    # smallest normal number, in units of that number
    tiny = 2.0 ** _compute_emin(dtype)
    small = np.abs(exact.hi) < tiny
    with np.errstate(invalid="ignore"):
        abs_err = np.abs((actual - exact.hi) - exact.lo) / tiny
    abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
    err = np.where(small, abs_err, err)
    bound = np.where(small, 1.0, bound)
    return err, bound, np.where(small, 0.0, err)


def _metric(func: str, dtype: str) -> str:
    return "rel-ulp" if dtype not in HALF and func != "logsumexp" else "ulp"


def _run(be: Any, func: str, dtype: str, x: np.ndarray, where: Any) -> np.ndarray:
    kw: dict[str, Any] = {"axis": -1}
    if where is not None:
        kw["where"] = be.asarray(where)
    out = getattr(sx, func)(be.asarray(x, dtype=dtype), **kw)
    assert be.dtype_name(out.dtype) == dtype
    return be.to_numpy(out).astype(np.float64)


def _call_all(
    be: Any, func: str, batches: list[Batch], rows: list[np.ndarray]
) -> list[np.ndarray]:
    """``func`` of each batch's rows along the last axis.

    JAX compiles once per shape (a third of a second here), so there every
    batch is padded with ``-inf`` to the widest width and computed in one
    call: ``-inf`` entries are absent from the distribution (docs/contract.md), which
    leaves the other entries' results unchanged.
    """
    dtype = batches[0].dtype
    masked = batches[0].where is not None
    if not be.jax:
        return [
            _run(be, func, dtype, b.x_in[r], b.where[r] if masked else None)
            for b, r in zip(batches, rows, strict=True)
        ]
    full = max(b.width for b in batches)
    xs, ws = [], []
    for b, r in zip(batches, rows, strict=True):
        pad = ((0, 0), (0, full - b.width))
        xs.append(np.pad(b.x_in[r], pad, constant_values=-np.inf))
        if masked:
            ws.append(np.pad(b.where[r], pad, constant_values=False))
    out = _run(
        be, func, dtype, np.concatenate(xs), np.concatenate(ws) if masked else None
    )
    pieces = np.split(out, np.cumsum([len(r) for r in rows])[:-1])
    if func == "logsumexp":
        return pieces
    return [p[:, : b.width] for p, b in zip(pieces, batches, strict=True)]


def _record(
    key: tuple[str, str, str], where: str, worst: float, **extra: float
) -> None:
    entry = WORST.setdefault(key, {"metric": _metric(*key[1:]), "worst": -1.0})
    if worst > entry["worst"]:
        entry["worst"], entry["where"] = worst, where
    for k, v in extra.items():
        entry[k] = max(entry.get(k, 0.0), v)


@pytest.fixture(scope="module", autouse=True)
def _accuracy_report() -> Any:
    yield
    if not WORST:
        return
    lines = [
        "",
        (
            "worst errors against mpmath (ulp: of the exact value; rel-ulp:"
            " relative error / eps; float32/64 softmax, log_softmax: vs the"
            " result for fl(x - max))"
        ),
        f"{'backend':<26}{'function':<12}{'dtype':<9}{'worst':>8} {'metric':<8}",
    ]
    for (name, func, dtype), e in sorted(WORST.items()):
        extra = ""
        if "vs_unrounded" in e:
            extra = f"; vs exact of the unrounded row: {e['vs_unrounded']:.3g}"
        if "beyond_allowance" in e:
            extra = f"; beyond the cancellation allowance: {e['beyond_allowance']:.3g}"
        lines.append(
            f"{name:<26}{func:<12}{dtype:<9}{e['worst']:>8.3f} {e['metric']:<8}"
            f"({e['where']}{extra})"
        )
    print("\n".join(lines))
    path = os.environ.get("SOFTMAX_XP_ACCURACY_JSON")
    if path:
        rows = [
            {"backend": k[0], "function": k[1], "dtype": k[2], **v}
            for k, v in WORST.items()
        ]
        Path(path).write_text(json.dumps(rows, indent=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", FUNCS)
def test_worst_case_vs_mpmath(be: Any, func: str, dtype: str) -> None:
    if dtype not in be.float_dtypes:
        pytest.skip(f"{be.name} has no {dtype}")
    failures = []
    for masked in (False, True):
        batches = [_batch(width, dtype, masked) for width in WIDTHS]
        rows = [b.rows(be.lazy) for b in batches]
        outs = _call_all(be, func, batches, rows)
        for width, batch, r, actual in zip(WIDTHS, batches, rows, outs, strict=True):
            exact = _take(batch.reference(func), r)
            allowance = batch.allowance()[r] if func == "logsumexp" else 0.0
            err, bound, reported = _measure(func, dtype, actual, exact, allowance)
            i = np.unravel_index(np.argmax(reported), reported.shape)
            extra = {}
            if func == "logsumexp":
                beyond = np.maximum(reported - allowance, 0.0)
                extra["beyond_allowance"] = float(beyond.max())
            if func == "log_softmax" and dtype not in HALF:
                unrounded = _take(batch.exact(func), r)
                extra["vs_unrounded"] = float(
                    _measure(func, dtype, actual, unrounded)[2].max()
                )
            where = f"{batch.labels[r][i[0]]}, width {width}"
            _record((be.name, func, dtype), where, float(reported[i]), **extra)
            bad = ~(err <= bound)
            if bad.any():
                j = np.unravel_index(
                    np.argmax(np.where(bad, err - bound, -1)), err.shape
                )
                failures.append(
                    f"{batch.labels[r][j[0]]}, width {width}, element {j[1:]}: "
                    f"got {actual[j]!r}, exact {exact.hi[j]!r} "
                    f"({err[j]:.3g} {_metric(func, dtype)} > {bound[j]:.3g})"
                )
    assert not failures, f"{func} {dtype} on {be.name}:\n" + "\n".join(failures)


def test_log_softmax_dominant_entry_float64(be: Any) -> None:
    # the largest log-probability keeps its relative precision: x - m is 0
    # there and the result is -log1p(s'), not 1010 - 1010.0000454...
    x = be.asarray([1010.0, 1000.0, 990.0], dtype="float64")
    got = be.to_numpy(sx.log_softmax(x))
    exact = mp_reference(np.array([1010.0, 1000.0, 990.0])).log_softmax
    assert got[0] == pytest.approx(-4.540096027691298e-05, rel=4 * 2.0**-52, abs=0)
    assert (rel_error(got, exact, "float64") <= LOG_SOFTMAX_REL_ULPS).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logsumexp_tiny_result(be: Any, dtype: str) -> None:
    # logsumexp([0, -40]) = log1p(e**-40) = 4.248e-18, not 0
    got = be.to_numpy(sx.logsumexp(be.asarray([0.0, -40.0], dtype=dtype)))
    exact = mp_reference(np.array([0.0, -40.0])).logsumexp
    assert float(got) > 0
    assert ulp_error(got, exact, dtype) <= LOGSUMEXP_ULPS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_accuracy_along_axis_0(be: Any, dtype: str) -> None:
    # the dominant rows laid out along the first axis of a 2-D array
    batch = _batch(100, dtype, False)
    rows = batch.rows(be.lazy)
    rows = rows[batch.labels[rows] == "dominant"]
    x = be.asarray(np.ascontiguousarray(batch.x64[rows].T), dtype=dtype)
    for func in FUNCS:
        exact = _take(batch.reference(func), rows)
        allowance = batch.allowance()[rows] if func == "logsumexp" else 0.0
        got = be.to_numpy(getattr(sx, func)(x, axis=0)).astype(np.float64)
        err, bound, _ = _measure(func, dtype, got.T, exact, allowance)
        assert (err <= bound).all(), f"{func}: {err.max():.3g} {_metric(func, dtype)}"


# --------------------------------------------------------------------------
# long slices along columns, Fortran order and inner axes
#
# Slices up to 100,000 long, laid out along the rows (the reference layout),
# the first axis of a C-ordered array, Fortran order and the middle axis of a
# (2, n, 3) array. A naive running sum along a non-contiguous axis errs by
# up to n roundings, a pairwise one by log2(n): these hold every layout to the
# bounds of the short rows above. The values come from a pool of 255 normal
# draws plus one larger value placed once per column (a unique maximum, and
# s' about n), so the exact results need mpmath only per pool value: with the
# counts of each value per column, S = sum(count * exp(v - max)).

LONG = (1000, 100_000)
LONG_COLUMNS = 6  # slices per array: (n, 6), (6, n) or (2, n, 3)
LONG_LAYOUTS = ("rows", "axis 0", "fortran", "inner axis")
LONG_POOL = 255

# worst errors along long slices: {(backend, path, layout, function, dtype): worst}
WORST_LONG: dict[tuple[str, str, str, str, str], float] = {}


class LongColumns:
    """``LONG_COLUMNS`` slices of length ``n`` in one dtype, and their exact results.

    ``x`` is ``(n, LONG_COLUMNS)``, one slice per column; ``exact[func]`` the
    exact results in that arrangement (logsumexp: one per column), softmax and
    log_softmax for ``fl(x - max)`` as in the rows test above.
    """

    def __init__(self, n: int, dtype: str) -> None:
        rng = np.random.default_rng([n, DTYPES.index(dtype), 17])
        pool = _round_to(rng.normal(0.0, 1.0, LONG_POOL), dtype)
        top = _round_to(pool.astype(np.float64).max() + 0.5, dtype)
        pool = np.append(pool, top)
        cols = np.arange(LONG_COLUMNS)
        idx = rng.integers(0, LONG_POOL, (n, LONG_COLUMNS))
        idx[rng.integers(0, n, LONG_COLUMNS), cols] = LONG_POOL  # the maximum
        self.x = pool[idx]
        counts = np.stack([np.bincount(idx[:, c], minlength=pool.size) for c in cols])
        values = pool.astype(np.float64)
        shifted = (pool - top).astype(np.float64)  # fl(v - max) in the dtype
        mpf = mpmath.mpf
        sm = np.empty((pool.size, LONG_COLUMNS), dtype=object)
        ls = np.empty((pool.size, LONG_COLUMNS), dtype=object)
        lse = np.empty(LONG_COLUMNS, dtype=object)
        with mpmath.workdps(40):
            e_rounded = [mpmath.exp(mpf(float(z))) for z in shifted]
            m = mpf(float(values[-1]))
            e_exact = [mpmath.exp(mpf(float(v)) - m) for v in values]
            for c in cols:
                cnt = [int(k) for k in counts[c]]
                total = mpmath.fsum(k * e for k, e in zip(cnt, e_rounded, strict=True))
                log_total = mpmath.log(total)
                sm[:, c] = [e / total for e in e_rounded]
                ls[:, c] = [mpf(float(z)) - log_total for z in shifted]
                exact = mpmath.fsum(k * e for k, e in zip(cnt, e_exact, strict=True))
                lse[c] = m + mpmath.log(exact)
        self.exact: dict[str, DD] = {"logsumexp": to_dd(lse)}
        for func, table in (("softmax", sm), ("log_softmax", ls)):
            dd = to_dd(table)
            self.exact[func] = DD(dd.hi[idx, cols], dd.lo[idx, cols])

    @staticmethod
    def arrange(x: np.ndarray, layout: str) -> tuple[np.ndarray, int]:
        """``x`` (n, LONG_COLUMNS) in ``layout``, and the axis of its slices."""
        n = x.shape[0]
        if layout == "rows":
            return np.ascontiguousarray(x.T), -1
        if layout == "axis 0":
            return np.ascontiguousarray(x), 0
        if layout == "fortran":
            return np.asfortranarray(x.T), -1
        return np.ascontiguousarray(x.reshape(n, 2, 3).transpose(1, 0, 2)), 1

    @staticmethod
    def back(out: np.ndarray, layout: str, func: str) -> np.ndarray:
        """A result in ``layout`` back in the (n, LONG_COLUMNS) arrangement."""
        if func == "logsumexp":
            return out.reshape(LONG_COLUMNS)
        if layout in ("rows", "fortran"):
            return out.T
        if layout == "axis 0":
            return out
        return out.transpose(1, 0, 2).reshape(-1, LONG_COLUMNS)


@functools.cache
def _long_columns(n: int, dtype: str) -> LongColumns:
    return LongColumns(n, dtype)


@pytest.fixture(scope="module", autouse=True)
def _long_report() -> Any:
    yield
    if not WORST_LONG:
        return
    lines = [
        "",
        "worst errors along slices of 1,000 and 100,000 (rel-ulp; logsumexp: ulp)",
        f"{'backend':<26}{'path':<9}{'dtype':<9}{'function':<12}"
        + "".join(f"{layout:>12}" for layout in LONG_LAYOUTS),
    ]
    keys = sorted({(k[0], k[1], k[4], k[3]) for k in WORST_LONG})
    for name, path, dtype, func in keys:
        cells = [WORST_LONG.get((name, path, lay, func, dtype)) for lay in LONG_LAYOUTS]
        lines.append(
            f"{name:<26}{path:<9}{dtype:<9}{func:<12}"
            + "".join("" if c is None else f"{c:>12.3f}" for c in cells)
        )
    print("\n".join(lines))


@pytest.mark.parametrize("path", ["fast", "generic"])
@pytest.mark.parametrize("layout", LONG_LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_slices_in_every_layout(
    be: Any, dtype: str, layout: str, path: str
) -> None:
    failures = []
    for n in LONG:
        data = _long_columns(n, dtype)
        arr, axis = LongColumns.arrange(data.x, layout)
        x = be.asarray(arr, dtype=dtype)
        for func in FUNCS:
            fn = getattr(sx, func)
            out = generic(fn, x, axis=axis) if path == "generic" else fn(x, axis=axis)
            assert be.dtype_name(out.dtype) == dtype
            got = LongColumns.back(be.to_numpy(out).astype(np.float64), layout, func)
            err, bound, reported = _measure(func, dtype, got, data.exact[func])
            key = (be.name, path, layout, func, dtype)
            WORST_LONG[key] = max(WORST_LONG.get(key, 0.0), float(reported.max()))
            if not (err <= bound).all():
                failures.append(
                    f"{func}, n={n}: {err.max():.3g} {_metric(func, dtype)}"
                    f" > {bound.max():.3g}"
                )
    assert not failures, f"{layout} {dtype} on {be.name} ({path}): " + "; ".join(
        failures
    )
