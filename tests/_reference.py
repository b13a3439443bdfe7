"""mpmath references for softmax, log_softmax and logsumexp, and ulp errors.

The references work on one 1-D NumPy row (float16, bfloat16, float32 or
float64; every value is taken exactly) at ``DPS`` decimal digits and follow the
contract table of docs/contract.md slice by slice: masked entries are removed,
a NaN makes everything NaN, ``+inf`` entries share the mass, nothing left gives
0 / ``-inf``. The largest term is kept out of the sum (``lse = m + log1p(s')``)
so that tiny results such as ``logsumexp([0, -700])`` keep their relative
precision even when ``1 + s'`` would round to 1 at ``DPS`` digits.

Exact values are handed around as mpmath numbers or, for fast vectorised
comparisons, as a double-double :class:`DD` (``hi + lo`` with ``hi`` the value
rounded to float64): :func:`ulp_error` turns an actual result of any float
dtype into an error in units in the last place of the exact value, all in
NumPy.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")

__all__ = [
    "DD",
    "DPS",
    "FORMATS",
    "Reference",
    "dtype_name",
    "mp_log_softmax",
    "mp_log_softmax_rounded_shift",
    "mp_logsumexp",
    "mp_reference",
    "mp_softmax",
    "mp_softmax_rounded_shift",
    "rel_error",
    "rounded_shift",
    "to_dd",
    "ulp",
    "ulp_error",
]

DPS = 60

# significand bits (the implicit one included) and the smallest normal exponent
FORMATS: dict[str, tuple[int, int]] = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}


class DD(NamedTuple):
    """Exact values as ``hi + lo``: ``hi`` rounded to float64, ``lo`` the rest."""

    hi: np.ndarray
    lo: np.ndarray


class Reference(NamedTuple):
    """The exact results for one row (object arrays of ``mpmath.mpf``)."""

    softmax: np.ndarray
    log_softmax: np.ndarray
    logsumexp: Any  # mpmath.mpf


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``np.float32``, ``torch.float32``, ``jnp.float32``, ..."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    name = name.rsplit(".", 1)[-1]
    if name not in FORMATS:
        msg = f"no floating-point format known for dtype {dtype!r}"
        raise ValueError(msg)
    return name


def _as_float64_row(row: Any) -> np.ndarray:
    a = np.asarray(row)
    if a.ndim != 1:
        msg = f"a reference row must be 1-D, got shape {a.shape}"
        raise ValueError(msg)
    # float16, bfloat16 and float32 values are all exact in float64
    return a.astype(np.float64)


def _mask(where: Any, n: int) -> np.ndarray:
    if where is None:
        return np.ones(n, dtype=bool)
    return np.broadcast_to(np.asarray(where, dtype=bool), (n,))


@functools.lru_cache(maxsize=4096)
def _reference_cached(data: bytes, keep: bytes, dps: int) -> Reference:
    row = np.frombuffer(data, dtype=np.float64)
    kept = np.frombuffer(keep, dtype=bool)
    mpf = mpmath.mpf
    n = row.size
    zero, ninf, nan = mpf(0), mpf("-inf"), mpf("nan")
    sm = np.empty(n, dtype=object)
    ls = np.empty(n, dtype=object)
    sm[:] = zero
    ls[:] = ninf
    vals = row[kept]
    idx = np.flatnonzero(kept)
    with mpmath.workdps(dps):
        if np.isnan(vals).any():
            sm[idx] = nan
            ls[idx] = nan
            return Reference(sm, ls, nan)
        pinf = np.isposinf(vals)
        if pinf.any():
            k = int(pinf.sum())
            sm[idx[pinf]] = mpf(1) / k
            ls[idx[pinf]] = -mpmath.log(k)
            return Reference(sm, ls, mpf("inf"))
        finite = np.isfinite(vals)
        if not finite.any():  # nothing left: all -inf, all masked, or empty
            return Reference(sm, ls, ninf)
        fidx = idx[finite]
        x = [mpf(float(v)) for v in row[fidx]]
        top = int(np.argmax(row[fidx]))
        m = x[top]
        d = [xi - m for xi in x]
        e = [mpmath.exp(di) for di in d]
        # s' leaves the largest term (exactly 1) out: log1p keeps tiny sums
        s_rest = mpmath.fsum(e[:top] + e[top + 1 :])
        log1p_s = mpmath.log1p(s_rest)
        total = 1 + s_rest
        sm[fidx] = [ei / total for ei in e]
        ls[fidx] = [di - log1p_s for di in d]
        return Reference(sm, ls, m + log1p_s)


def mp_reference(row: Any, where: Any = None, *, dps: int = DPS) -> Reference:
    """Exact softmax, log_softmax and logsumexp of a 1-D row (cached)."""
    r = _as_float64_row(row)
    keep = np.ascontiguousarray(_mask(where, r.size))
    return _reference_cached(np.ascontiguousarray(r).tobytes(), keep.tobytes(), dps)


def mp_softmax(row: Any, where: Any = None, *, dps: int = DPS) -> np.ndarray:
    """Exact softmax of a 1-D row; masked entries read 0."""
    return mp_reference(row, where, dps=dps).softmax


def mp_log_softmax(row: Any, where: Any = None, *, dps: int = DPS) -> np.ndarray:
    """Exact log_softmax of a 1-D row; masked entries read ``-inf``."""
    return mp_reference(row, where, dps=dps).log_softmax


def mp_logsumexp(
    row: Any,
    where: Any = None,
    *,
    b: Any = None,
    return_sign: bool = False,
    dps: int = DPS,
) -> Any:
    """Exact ``log(sum(b * exp(x)))`` over the kept entries of a 1-D row.

    Without ``b`` this is the contract's logsumexp. With ``b`` (finite ``x``
    only) it follows SciPy: the log of the absolute value of the weighted sum,
    NaN for a negative sum unless ``return_sign`` (then ``(lse, sign)``).
    """
    if b is None:
        lse = mp_reference(row, where, dps=dps).logsumexp
        if not return_sign:
            return lse
        sign = mpmath.mpf(0) if lse == mpmath.mpf("-inf") else mpmath.mpf(1)
        return lse, (mpmath.mpf("nan") if mpmath.isnan(lse) else sign)
    r = _as_float64_row(row)
    keep = _mask(where, r.size)
    bb = np.broadcast_to(np.asarray(b, dtype=np.float64), r.shape)
    if not np.isfinite(r[keep]).all() or not np.isfinite(bb[keep]).all():
        msg = "mp_logsumexp with b supports finite x and b only"
        raise ValueError(msg)
    with mpmath.workdps(dps):
        total = mpmath.fsum(
            mpmath.mpf(float(bi)) * mpmath.exp(mpmath.mpf(float(xi)))
            for xi, bi in zip(r[keep], bb[keep], strict=True)
        )
        if total == 0:
            lse, sign = mpmath.mpf("-inf"), mpmath.mpf(0)
        else:
            lse, sign = mpmath.log(abs(total)), mpmath.sign(total)
    if return_sign:
        return lse, sign
    return lse if sign >= 0 else mpmath.mpf("nan")


def rounded_shift(row: Any, where: Any = None) -> np.ndarray:
    """``fl(x - max(x))`` over the kept entries, rounded in the row's dtype.

    Masked entries are left as they are (the references ignore them). Rows
    with nothing left come back unchanged. Only finite and ``-inf`` entries.
    """
    a = np.asarray(row)
    keep = _mask(where, a.size)
    kept = a[keep]
    if kept.size == 0 or not np.isfinite(kept).any():
        return a.copy()
    if np.isnan(kept).any() or np.isposinf(kept).any():
        msg = "rounded_shift supports finite and -inf entries only"
        raise ValueError(msg)
    m = kept[np.isfinite(kept)].max()
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(keep, a - m, a)  # NumPy rounds once, in a's dtype


def mp_softmax_rounded_shift(
    row: Any, where: Any = None, *, dps: int = DPS
) -> np.ndarray:
    """Exact softmax of ``fl(x - max(x))``, the shift rounded in the row's dtype.

    This is the best a softmax computed in the input's precision can do: the
    differences ``x_i - max`` are rounded once, and everything after that is
    exact. Only rows of finite and ``-inf`` values.
    """
    return mp_softmax(rounded_shift(row, where), where, dps=dps)


def mp_log_softmax_rounded_shift(
    row: Any, where: Any = None, *, dps: int = DPS
) -> np.ndarray:
    """Exact log_softmax of ``fl(x - max(x))`` (see :func:`rounded_shift`).

    ``x_i - m - log1p(s')`` computed in the input's precision inherits the
    rounding of ``x_i - m``, and so does ``s'``: the largest entry
    ``-log1p(s')`` is then off by up to ``|x_i - m|`` half-ulps relative.
    """
    return mp_log_softmax(rounded_shift(row, where), where, dps=dps)


def to_dd(exact: Any) -> DD:
    """``exact`` (an mpf, a sequence of them, or a :class:`DD`) as a :class:`DD`."""
    if isinstance(exact, DD):
        return exact
    flat = np.asarray(exact, dtype=object).ravel()
    hi = np.empty(flat.size, dtype=np.float64)
    lo = np.zeros(flat.size, dtype=np.float64)
    with mpmath.workdps(DPS):
        for i, item in enumerate(flat):
            v = mpmath.mpf(item)
            h = float(v)  # mpmath rounds to nearest
            hi[i] = h
            if mpmath.isfinite(v) and np.isfinite(h):
                lo[i] = float(v - h)
    shape = np.shape(exact)
    return DD(hi.reshape(shape), lo.reshape(shape))


def ulp(exact: Any, dtype: Any) -> np.ndarray:
    """The ulp of each exact value in ``dtype`` (subnormal spacing below the normals).

    ``ulp(x) = 2**(max(e, emin) - p + 1)`` with ``2**e <= |x| < 2**(e+1)``,
    decided on the exact value (``hi`` a power of two with ``lo`` of the other
    sign lies in the binade below).
    """
    p, emin = FORMATS[dtype_name(dtype)]
    hi, lo = to_dd(exact)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        frac, e2 = np.frexp(hi)  # |frac| in [0.5, 1): |hi| in [2**(e2-1), 2**e2)
        e = e2.astype(np.int64) - 1
        below = (np.abs(frac) == 0.5) & (lo != 0) & (np.sign(lo) != np.sign(hi))
        e = np.where(below, e - 1, e)
        e = np.where((hi == 0) | ~np.isfinite(hi), emin, np.maximum(e, emin))
    return np.ldexp(1.0, (e - p + 1).astype(np.int32))


def ulp_error(actual: Any, exact: Any, dtype: Any) -> np.ndarray:
    """``|actual - exact|`` in ulps of the exact value in ``dtype``.

    ``actual`` is any NumPy-convertible array whose values are exact in
    float64. NaN against NaN and equal infinities count 0; any other pairing
    with a NaN or an infinity counts ``inf``.
    """
    dd = to_dd(exact)
    act = np.asarray(actual).astype(np.float64)
    hi, lo = np.broadcast_arrays(
        np.asarray(dd.hi, np.float64), np.asarray(dd.lo, np.float64)
    )
    act = np.broadcast_to(act, hi.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        # actual - hi is exact (Sterbenz) whenever the error is small at all
        err = np.abs((act - hi) - lo) / ulp(dd, dtype)
    both_nan = np.isnan(act) & np.isnan(hi)
    same_inf = np.isinf(act) & (act == hi)
    err = np.where(both_nan | same_inf, 0.0, err)
    bad = (np.isnan(act) | np.isnan(hi) | np.isinf(act) | np.isinf(hi)) & ~(
        both_nan | same_inf
    )
    return np.where(bad, np.inf, err)


def rel_error(actual: Any, exact: Any, dtype: Any) -> np.ndarray:
    """``|actual - exact| / |exact|`` in units of ``dtype``'s epsilon ``2**(1-p)``.

    The "ulp relative" measure: at most the ulp error, and up to half of it
    for values at the bottom of their binade. An exact 0 counts 0 when matched
    and ``inf`` otherwise; NaN and infinities count as in :func:`ulp_error`.
    """
    p = FORMATS[dtype_name(dtype)][0]
    dd = to_dd(exact)
    hi = np.asarray(dd.hi, dtype=np.float64)
    err_ulp = ulp_error(actual, dd, dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rel = err_ulp * ulp(dd, dtype) / np.abs(hi) / 2.0 ** (1 - p)
    return np.where((err_ulp == 0) | np.isinf(err_ulp), err_ulp, rel)
