"""Property tests (hypothesis) on every backend.

Shift invariance, sum to one, order preservation, ``log_softmax ==
log(softmax)``, ``max <= logsumexp <= max + log n``, masking == deleting, and
``softmin(x) == softmax(-x)``. Inputs include ``-inf`` everywhere, and
``+inf`` / NaN wherever the contract still says what the property gives
(docs/contract.md: a NaN makes its slice NaN, ``k`` entries of ``+inf`` share the
mass, nothing left gives 0 / ``-inf``).

Shapes and axes come from small fixed sets so that backends which compile per
shape (JAX) reuse their work; Dask, slow per call, runs fewer examples.
Tolerances are multiples of the dtype's epsilon, scaled by the size of the
values where rounding them is what costs accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_xp as sx

INF, NAN = math.inf, math.nan
DTYPES = ("float32", "float64")
EPS = {"float32": 2.0**-23, "float64": 2.0**-52}
TINY = {"float32": 2.0**-126, "float64": 2.0**-1022}  # smallest normals
SHAPES = ((7,), (3, 5), (2, 3, 4))
SPECIALS = (-INF, INF, NAN)
_ONLY_FIRST = np.arange(7) < 1
_FIRST_THREE = np.arange(7) < 3
AXES = {
    1: (-1, 0, None, ()),
    2: (-1, 0, (0, 1), None, ()),
    3: (-1, 1, (0, 2), None, ()),
}


def _settings(be: Any, scale: float = 1.0) -> Any:
    n = round((8 if be.lazy else 10 if be.jax else 40) * scale)
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    return x.astype(dtype).astype(np.float64)


@st.composite
def _cases(
    draw: Any,
    be: Any,
    *,
    specials: tuple[float, ...] = (-INF,),
    bound: float = 50.0,
) -> tuple[np.ndarray, Any, np.ndarray | None, str]:
    """(x as float64 rounded to dtype, axis, where or None, dtype)."""
    # JAX compiles per shape and axis: fewer of them there keep the run short
    shape = draw(st.sampled_from(SHAPES[1:2] if be.jax else SHAPES))
    axis = draw(st.sampled_from((-1, None, ()) if be.jax else AXES[len(shape)]))
    finite = st.floats(-bound, bound)
    elements = st.one_of(finite, st.sampled_from(specials)) if specials else finite
    dtype = draw(st.sampled_from(DTYPES))
    x = _round(draw(hnp.arrays(np.float64, shape, elements=elements)), dtype)
    where = draw(st.none() | hnp.arrays(np.bool_, shape))
    return x, axis, where, dtype


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axis = axis if isinstance(axis, tuple) else (axis,)
    return tuple(a % ndim for a in axis)


def _slices(a: np.ndarray, axis: Any) -> np.ndarray:
    """``a`` as a 2-D array: one row per slice along ``axis``."""
    axes = _axes(axis, a.ndim)
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    n = math.prod(a.shape[i] for i in axes)
    return moved.reshape(-1, n)


def _call(be: Any, kind: str, x: np.ndarray, dtype: str, **kw: Any) -> np.ndarray:
    if kw.get("where") is not None:
        kw["where"] = be.asarray(kw["where"])
    out = getattr(sx, kind)(be.asarray(x, dtype=dtype), **kw)
    return be.to_numpy(out).astype(np.float64)


def _kept(x: np.ndarray, where: np.ndarray | None) -> np.ndarray:
    return np.ones(x.shape, dtype=bool) if where is None else where


# --------------------------------------------------------------------------


def test_shift_invariance(be: Any) -> None:
    @_settings(be)
    @given(case=_cases(be, bound=50.0), c=st.floats(-100.0, 100.0))
    def check(case: Any, c: float) -> None:
        x, axis, where, dtype = case
        with np.errstate(invalid="ignore"):
            shifted = _round(x + c, dtype)  # -inf stays -inf
        p = _call(be, "softmax", x, dtype, axis=axis, where=where)
        q = _call(be, "softmax", shifted, dtype, axis=axis, where=where)
        # rounding x + c moves each x - max by up to eps (|x| + |c|)
        eps = EPS[dtype]
        rtol = 8 * eps + 4 * eps * (50.0 + abs(c))
        np.testing.assert_allclose(q, p, rtol=rtol, atol=TINY[dtype])

    check()


def test_sums_to_one(be: Any) -> None:
    @_settings(be)
    @given(case=_cases(be, specials=SPECIALS, bound=1e3))
    # a NaN beside masked entries: the slice is NaN, the masked entries read 0
    @example(case=(np.array([NAN, 0, 0, 0, 0, 0, 0]), -1, _ONLY_FIRST, "float64"))
    @example(case=(np.array([INF, INF, 0, NAN, 1, 2, 3]), -1, _FIRST_THREE, "float32"))
    def check(case: Any) -> None:
        x, axis, where, dtype = case
        p = _slices(_call(be, "softmax", x, dtype, axis=axis, where=where), axis)
        xs = _slices(x, axis)
        keep = _slices(_kept(x, where), axis)
        for row, prow, krow in zip(xs, p, keep, strict=True):
            live = row[krow]
            assert (prow[~krow] == 0).all(), "masked entries read 0"
            if np.isnan(live).any():
                assert np.isnan(prow[krow]).all()
            elif (live == -INF).all():  # nothing left (masked, -inf or empty)
                assert (prow == 0).all()
            else:
                assert not np.isnan(prow).any()
                assert (prow >= 0).all()
                n = live.size
                assert abs(prow.sum() - 1) <= 4 * (n + 1) * EPS[dtype]

    check()


def test_order_preserved(be: Any) -> None:
    @_settings(be)
    @given(case=_cases(be, specials=(-INF, INF), bound=1e3))
    def check(case: Any) -> None:
        x, axis, where, dtype = case
        xs = _slices(x, axis)
        keep = _slices(_kept(x, where), axis)
        for kind in ("softmax", "log_softmax", "softmin"):
            p = _slices(_call(be, kind, x, dtype, axis=axis, where=where), axis)
            for row, prow, krow in zip(xs, p, keep, strict=True):
                r, q = row[krow], prow[krow]
                if kind == "softmin":
                    r = -r
                less = r[:, None] < r[None, :]
                assert (q[:, None] <= q[None, :])[less].all(), (kind, r, q)

    check()


def test_log_softmax_is_log_of_softmax(be: Any) -> None:
    @_settings(be)
    @given(case=_cases(be, specials=SPECIALS, bound=800.0))
    def check(case: Any) -> None:
        x, axis, where, dtype = case
        p = _call(be, "softmax", x, dtype, axis=axis, where=where)
        lp = _call(be, "log_softmax", x, dtype, axis=axis, where=where)
        eps = EPS[dtype]
        assert (np.isnan(p) == np.isnan(lp)).all()
        normal = p >= TINY[dtype]  # p has full relative precision there
        with np.errstate(divide="ignore"):
            logp = np.log(p[normal])
        np.testing.assert_allclose(lp[normal], logp, rtol=8 * eps, atol=8 * eps)
        # where softmax is 0, log_softmax is -inf or below the normal range
        zero = p == 0
        assert (lp[zero] <= math.log(TINY[dtype]) + 1).all()

    check()


def test_logsumexp_between_max_and_max_plus_log_n(be: Any) -> None:
    @_settings(be)
    @given(case=_cases(be, specials=SPECIALS, bound=1e3))
    def check(case: Any) -> None:
        x, axis, where, dtype = case
        lse = _call(be, "logsumexp", x, dtype, axis=axis, where=where).ravel()
        xs = _slices(x, axis)
        keep = _slices(_kept(x, where), axis)
        eps = EPS[dtype]
        for got, row, krow in zip(lse, xs, keep, strict=True):
            live = row[krow]
            if np.isnan(live).any():
                assert math.isnan(got)
                continue
            m = live.max(initial=-INF)
            if not math.isfinite(m):  # +inf, or nothing left (-inf)
                assert got == m
                continue
            k = int(np.isfinite(live).sum())
            slack = 4 * eps * (abs(m) + math.log(k) + 1)
            assert m - slack <= got <= m + math.log(k) + slack

    check()


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_masking_is_deleting(be: Any, kind: str) -> None:
    @_settings(be, 0.6 if be.jax else 1.0)  # each length compiles anew on JAX
    @given(
        x=hnp.arrays(
            np.float64, 9, elements=st.floats(-1e3, 1e3) | st.sampled_from(SPECIALS)
        ),
        keep=hnp.arrays(np.bool_, 9),
        garbage=hnp.arrays(
            np.float64, 9, elements=st.sampled_from([NAN, INF, -INF, 1e30])
        ),
        dtype=st.sampled_from(DTYPES),
    )
    def check(x: np.ndarray, keep: np.ndarray, garbage: np.ndarray, dtype: str) -> None:
        x = _round(x, dtype)
        # masked entries hold NaN, inf or huge values: they must be ignored
        held = np.where(keep, x, garbage)
        got = _call(be, kind, held, dtype, axis=-1, where=keep)
        want = _call(be, kind, x[keep], dtype, axis=-1)
        eps = EPS[dtype]
        tol = {"rtol": 4 * eps * 10, "atol": TINY[dtype]}
        if kind == "logsumexp":
            tol["atol"] += 4 * eps * (1e3 + math.log(10))
            np.testing.assert_allclose(got, want, **tol)
            return
        np.testing.assert_allclose(got[keep], want, **tol)
        assert (got[~keep] == (-INF if kind == "log_softmax" else 0.0)).all()

    check()


def test_softmin_is_softmax_of_negated(be: Any) -> None:
    @_settings(be)
    @given(
        case=_cases(be, specials=SPECIALS, bound=1e3),
        t=st.none() | st.sampled_from([0.25, 0.7, 3.0]),
    )
    def check(case: Any, t: float | None) -> None:
        x, axis, where, dtype = case
        kw = {"axis": axis, "where": where, "temperature": t}
        got = _call(be, "softmin", x, dtype, **kw)
        want = _call(be, "softmax", -x, dtype, **kw)
        np.testing.assert_allclose(got, want, rtol=4 * EPS[dtype], atol=TINY[dtype])

    check()
