"""logsumexp's SciPy half of the contract: ``b=``, ``return_sign=``, complex input.

References are ``scipy.special.logsumexp`` on float64 / complex128 copies of
the inputs (finite values), explicit removal of masked and zero-weight entries,
hand-written sign rules from docs/decisions.md ("logsumexp"), and mpmath for the log1p accuracy case.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import array_api_compat
import mpmath
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import softmax_xp as sx

# every reference in this module is SciPy's (absent in tests-minimal)
scipy = pytest.importorskip("scipy")
pytest.importorskip("scipy.special")

NAN, INF = math.nan, math.inf
HALF = ("float16", "bfloat16")
BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


def _u(name: str) -> float:
    """Unit roundoff of the dtype that computes ``name`` (half precision: float32)."""
    return 2.0 ** -BITS["float32" if name in HALF else name]


def _ulp(v: np.ndarray, name: str) -> np.ndarray:
    a = np.abs(v)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.exp2(e - (BITS[name] - 1))


def _round(v: Any, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if name != "bfloat16":
        return v.astype(name).astype(np.float64)
    m, e = np.frexp(v)  # 8 significant bits, ties to even
    return np.ldexp(np.round(m * 256.0) / 256.0, e)


def _np(be: Any, a: Any) -> np.ndarray:
    """``a`` as a NumPy array; host float arrays pass through (Dask computes once)."""
    if isinstance(a, np.ndarray | np.generic) and a.dtype.kind in "fc":
        return a
    return np.asarray(be.to_numpy(a))


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


def lse_bound(x: np.ndarray, b: np.ndarray | None, axis: Any, name: str) -> np.ndarray:
    """Error bound of logsumexp(x, b) in dtype ``name``, x and b finite.

    lse = m + log|S| with S = sum b e^(x - m): an n-term sum is off by at most
    (n + 4) u times sum|b e^(x - m)| (Higham), that is (n + 4) u * cond in
    log|S|; the final m + log|S| adds u (|m| + |log|S||). SciPy's float64
    answer carries the same bound, hence the 2 for float64.
    """
    x, b = np.broadcast_arrays(x, np.ones_like(x) if b is None else b)
    axes = _axes(axis, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    m = np.max(x, axis=axes, keepdims=True)
    terms = b * np.exp(x - m)
    s_abs = np.sum(np.abs(terms), axis=axes)
    s = np.abs(np.sum(terms, axis=axes))
    m = np.squeeze(m, axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):  # s == 0: the answer is -inf
        cond = s_abs / s
        mag = np.abs(m) + np.abs(np.log(s))
    u = _u(name)
    return (2 if name == "float64" else 1) * u * ((n + 4) * cond + mag)


def assert_lse(
    be: Any, got: Any, ref: Any, name: str, bound: Any = 0.0, msg: str = ""
) -> None:
    """NaN and infinities exactly; finite values within ``bound`` (half: 1 ulp of the rounded reference)."""
    g = _np(be, got).astype(np.float64)
    r = np.asarray(ref, dtype=np.float64)
    assert g.shape == r.shape, (g.shape, r.shape)
    special = ~np.isfinite(r)
    assert_array_equal(g[special], r[special], err_msg=f"special values {msg}")
    bound = np.broadcast_to(bound, r.shape)[~special]
    if name in HALF:
        rr = _round(r[~special], name)
        bound = bound + _ulp(rr, name)
    else:
        rr = r[~special]
    err = np.abs(g[~special] - rr)
    bad = ~(err <= bound)
    assert not bad.any(), (
        f"{msg} {name}: got {g[~special][bad]}, want {rr[bad]}, bound {bound[bad]}"
    )


def _check_array(be: Any, out: Any, x: Any, shape: tuple[int, ...], dtype: Any) -> None:
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(x)
    assert array_api_compat.device(out) == array_api_compat.device(x)
    assert out.dtype == dtype, (out.dtype, dtype)
    assert tuple(out.shape) == shape
    if be.native is np:
        assert type(out) is np.ndarray


def _grid(shape: tuple[int, ...], seed: int, lo: int = -64, hi: int = 64) -> np.ndarray:
    # multiples of 1/8: exact in every float dtype, bfloat16 included
    return np.random.default_rng(seed).integers(lo, hi + 1, size=shape) / 8.0


# --------------------------------------------------------------------------
# b= and return_sign= against SciPy
# --------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 1), ()])
@pytest.mark.parametrize("return_sign", [False, True])
def test_weights_match_scipy(be, axis, return_sign):
    x64 = _grid((3, 4), seed=0)
    # weights in [-1, 2]: some negative, some 0
    b64 = _grid((3, 4), seed=1, lo=-8, hi=16)
    # SciPy 1.14 (the declared floor) warns of the log of a negative total
    with np.errstate(invalid="ignore"):
        ref = scipy.special.logsumexp(x64, axis=axis, b=b64, return_sign=return_sign)
    # every dtype on the two common reductions; float64 for the other axes
    dtypes = be.float_dtypes if axis in (None, -1) else {"float64": be.dtype("float64")}
    for name, dt in dtypes.items():
        x, b = be.asarray(x64, dtype=dt), be.asarray(b64, dtype=dt)
        out = sx.logsumexp(x, axis=axis, b=b, return_sign=return_sign)
        bound = lse_bound(x64, b64, axis, name)
        if return_sign:
            lse, sign = out
            _check_array(be, lse, x, np.shape(ref[0]), dt)
            _check_array(be, sign, x, np.shape(ref[0]), dt)
            assert_lse(be, lse, ref[0], name, bound)
            assert_array_equal(_np(be, sign).astype(np.float64), ref[1])
        else:
            _check_array(be, out, x, np.shape(ref), dt)
            # negative totals are NaN (the contract's sole NaN from NaN-free input)
            assert_lse(be, out, ref, name, bound)


@pytest.mark.parametrize(
    ("xshape", "bshape", "axis"),
    [
        # every joint shape is (3, 4), the shape most tests use (JAX compiles per shape)
        ((4,), (3, 4), -1),
        ((4,), (3, 4), None),
        ((3, 1), (1, 4), 0),
        ((3, 1), (1, 4), 1),
        ((1, 4), (3, 1), (0, 1)),
        ((3, 4), (4,), 0),
        ((3, 4), (), -1),
    ],
)
def test_b_broadcasts_jointly_like_scipy(be, xshape, bshape, axis):
    x64 = _grid(xshape, seed=2)
    b64 = np.asarray(_grid(bshape, seed=3, lo=-8, hi=16))
    for return_sign in (False, True):
        # SciPy 1.14 (the declared floor) warns of the log of a negative total
        with np.errstate(invalid="ignore"):
            ref = scipy.special.logsumexp(
                x64, axis=axis, b=b64, return_sign=return_sign
            )
        x, b = be.asarray(x64, dtype="float64"), be.asarray(b64, dtype="float64")
        out = sx.logsumexp(x, axis=axis, b=b, return_sign=return_sign)
        lse_ref = ref[0] if return_sign else ref
        lse = out[0] if return_sign else out
        _check_array(be, lse, x, np.shape(lse_ref), be.dtype("float64"))
        bx, bb = np.broadcast_arrays(x64, b64)
        assert_lse(be, lse, lse_ref, "float64", lse_bound(bx, bb, axis, "float64"))
        if return_sign:
            assert_array_equal(_np(be, out[1]), ref[1])


@pytest.mark.parametrize("b", [2.0, [1.0, -0.5, 2.0]], ids=["scalar", "list"])
def test_b_python_objects(be, b):
    x64 = _grid((3, 3), seed=4)
    ref = scipy.special.logsumexp(x64, axis=-1, b=np.asarray(b), return_sign=True)
    x = be.asarray(x64, dtype="float64")
    lse, sign = sx.logsumexp(x, axis=-1, b=b, return_sign=True)
    _check_array(be, lse, x, (3,), be.dtype("float64"))
    bx, bb = np.broadcast_arrays(x64, np.asarray(b))
    assert_lse(be, lse, ref[0], "float64", lse_bound(bx, bb, -1, "float64"))
    assert_array_equal(_np(be, sign), ref[1])


def test_zero_weights_are_ignored_even_at_inf_and_nan(be):
    x64 = np.array([[1.0, INF, NAN, 2.0], [NAN, 0.5, INF, 3.0], [-INF, -1.0, NAN, 0.0]])
    b64 = np.array([[1.0, 0.0, 0.0, -3.0], [0.0, 2.0, 0.0, 1.0], [0.0, 0.5, 0.0, 1.0]])
    keep = b64 != 0
    want = [
        scipy.special.logsumexp(x64[i][keep[i]], b=b64[i][keep[i]], return_sign=True)
        for i in range(3)
    ]
    for name, dt in be.float_dtypes.items():
        x, b = be.asarray(x64, dtype=dt), be.asarray(b64, dtype=dt)
        lse, sign = sx.logsumexp(x, axis=1, b=b, return_sign=True)
        kx, kb = x64.copy(), b64.copy()
        kx[~keep] = -INF  # removed entries, for the bound
        kb[~keep] = 0.0
        assert_lse(be, lse, [w[0] for w in want], name, lse_bound(kx, kb, 1, name))
        assert_array_equal(_np(be, sign).astype(np.float64), [w[1] for w in want])
        # all weights zero: nothing left
        lse, sign = sx.logsumexp(
            x, axis=1, b=be.asarray(np.zeros((1, 4)), dtype=dt), return_sign=True
        )
        assert_array_equal(_np(be, lse), [-INF] * 3)
        assert_array_equal(_np(be, sign), [0.0] * 3)


def test_where_masks_b_too(be):
    x64 = np.array([[1.0, 2.0, NAN, 4.0], [INF, 0.5, 1.5, -2.0], [0.0, INF, 1.0, 2.0]])
    b64 = np.array(
        [[1.0, -5.0, 100.0, 2.0], [-1.0, 2.0, 1.0, 1.0], [1.0, 1.0, -2.0, -1.0]]
    )
    mask = np.array(
        [
            [True, True, False, True],
            [False, True, True, True],
            [True, False, True, True],
        ]
    )
    want = [
        scipy.special.logsumexp(x64[i][mask[i]], b=b64[i][mask[i]], return_sign=True)
        for i in range(3)
    ]
    x, b = be.asarray(x64, dtype="float64"), be.asarray(b64, dtype="float64")
    lse, sign = sx.logsumexp(x, axis=-1, b=b, where=be.asarray(mask), return_sign=True)
    kx, kb = np.where(mask, x64, -INF), np.where(mask, b64, 0.0)
    assert_lse(
        be, lse, [w[0] for w in want], "float64", lse_bound(kx, kb, -1, "float64")
    )
    assert_array_equal(_np(be, sign), [w[1] for w in want])
    # garbage weights under the mask are ignored as well
    b_bad = np.where(mask, b64, NAN)
    lse2 = sx.logsumexp(
        x, axis=-1, b=be.asarray(b_bad, dtype="float64"), where=be.asarray(mask)
    )
    # negative totals -> NaN without return_sign
    want2 = [w[0] if w[1] > 0 else NAN for w in want]
    assert_lse(be, lse2, want2, "float64", lse_bound(kx, kb, -1, "float64"))


def test_where_broadcasts_to_the_joint_shape(be):
    x64 = _grid((4,), seed=5)
    b64 = _grid((3, 4), seed=6, lo=1, hi=16)
    mask = np.array(
        [
            [True, False, True, True],
            [False, True, True, False],
            [True, True, True, True],
        ]
    )
    x, b = be.asarray(x64, dtype="float64"), be.asarray(b64, dtype="float64")
    out = sx.logsumexp(x, axis=-1, b=b, where=be.asarray(mask))
    bx = np.broadcast_to(x64, (3, 4))
    want = [
        scipy.special.logsumexp(bx[i][mask[i]], b=b64[i][mask[i]]) for i in range(3)
    ]
    _check_array(be, out, x, (3,), be.dtype("float64"))
    assert_lse(
        be,
        out,
        want,
        "float64",
        lse_bound(np.where(mask, bx, -INF), b64, -1, "float64"),
    )


# --------------------------------------------------------------------------
# return_sign: the sign rules of docs/decisions.md ("logsumexp")
# --------------------------------------------------------------------------

# id, x, b, where, (lse, sign), lse without return_sign; None: SciPy decides (finite cases)
SIGN_CASES = [
    ("all-neginf", [-INF, -INF], None, None, (-INF, 0.0), -INF),
    ("all-masked", [1.0, NAN], None, [False, False], (-INF, 0.0), -INF),
    ("nan-x", [1.0, NAN], None, None, (NAN, NAN), NAN),
    ("inf-no-weights", [INF, 3.0], None, None, (INF, 1.0), INF),
    ("two-inf-no-weights", [INF, -INF, INF], None, None, (INF, 1.0), INF),
    ("finite-no-weights", [0.0, 1.0, -2.0], None, None, None, None),
    ("all-zero-weights", [1.0, 2.0], [0.0, 0.0], None, (-INF, 0.0), -INF),
    ("exact-cancellation", [0.0, 0.0], [1.0, -1.0], None, (-INF, 0.0), -INF),
    ("nan-b", [0.0, 0.0], [1.0, NAN], None, (NAN, NAN), NAN),
    (
        "inf-positive-weights",
        [INF, INF, 1.0],
        [2.0, -1.0, -100.0],
        None,
        (INF, 1.0),
        INF,
    ),
    (
        "inf-negative-weights",
        [INF, INF, 1.0],
        [-2.0, 1.0, 100.0],
        None,
        (INF, -1.0),
        NAN,
    ),
    ("inf-weights-cancel", [INF, INF, 1.0], [1.0, -1.0, 5.0], None, (NAN, NAN), NAN),
    ("lone-inf-negative", [INF], [-1.0], None, (INF, -1.0), NAN),
    ("negative-total", [0.0, 1.0], [1.0, -2.0], None, None, None),
    ("positive-total", [0.0, 1.0], [2.0, -0.5], None, None, None),
]
WIDTH = 4


def _sign_batch(
    weighted: bool,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    """The cases as rows of width 4, padded with -inf entries of weight 1 (which change nothing)."""
    cases = [c for c in SIGN_CASES if weighted or c[2] is None]
    assert len(cases) % 3 == 0  # (3, 4) blocks: one compiled shape on JAX
    ids, xs, bs, ws, want = [], [], [], [], []
    for cid, x, b, w, signed_given, plain_given in cases:
        k = WIDTH - len(x)
        x64 = np.array(x)
        b64 = None if b is None else np.array(b)
        signed, plain = signed_given, plain_given
        if signed is None:
            signed = scipy.special.logsumexp(x64, b=b64, return_sign=True)
            # SciPy warns on the log of a negative total
            with np.errstate(invalid="ignore"):
                plain = scipy.special.logsumexp(x64, b=b64)
        ids.append(cid)
        xs.append([*x, *[-INF] * k])
        bs.append([*(b if b is not None else [1.0] * len(x)), *[1.0] * k])
        ws.append([*(w if w is not None else [True] * len(x)), *[True] * k])
        want.append((x64, b64, signed, plain))
    return ids, np.array(xs), np.array(bs), np.array(ws), want


@pytest.mark.parametrize("weighted", [True, False], ids=["weighted", "unweighted"])
def test_sign_rules(be, weighted):
    ids, x64, b64, w, want = _sign_batch(weighted)
    for name, dt in be.float_dtypes.items():
        for i in range(0, len(ids), 3):
            rows = slice(i, i + 3)
            xa = be.asarray(x64[rows], dtype=dt)
            kw: dict[str, Any] = {"where": be.asarray(w[rows])}
            if weighted:
                kw["b"] = be.asarray(b64[rows], dtype=dt)
            lse, sign = sx.logsumexp(xa, axis=-1, return_sign=True, **kw)
            plain = sx.logsumexp(xa, axis=-1, **kw)
            _check_array(be, lse, xa, (3,), dt)
            _check_array(be, sign, xa, (3,), dt)
            lse, sign, plain = (
                _np(be, a).astype(np.float64) for a in (lse, sign, plain)
            )
            for j, (cid, (x_, b_, signed, pl)) in enumerate(
                zip(ids[rows], want[rows], strict=True)
            ):
                bound = (
                    lse_bound(x_, b_, None, name) if math.isfinite(signed[0]) else 0.0
                )
                msg = f"{cid} ({name})"
                assert_lse(be, lse[j], signed[0], name, bound, msg)
                assert_array_equal(sign[j], signed[1], err_msg=msg)
                assert_lse(be, plain[j], pl, name, bound, msg + " without return_sign")


def test_negative_total_is_the_only_nan(be):
    """NaN-free input gives NaN only for a negative weighted total without return_sign."""
    x64 = _grid((3, 4), seed=7)
    b64 = _grid((3, 4), seed=8, lo=-16, hi=16)
    x64[0, :2] = INF
    b64[0, :2] = [1.0, -0.5]  # +inf entries whose weights do not cancel
    x64[1] = -INF
    x, b = be.asarray(x64, dtype="float64"), be.asarray(b64, dtype="float64")
    lse, sign = sx.logsumexp(x, axis=1, b=b, return_sign=True)
    plain = _np(be, sx.logsumexp(x, axis=1, b=b))
    s = _np(be, sign)
    nan_ok = (s < 0) | np.isnan(s)
    assert not np.isnan(plain[~nan_ok]).any()
    assert np.isnan(plain[s < 0]).all()
    # sign NaN only where +inf entries' weights cancel (none here) -> no NaN at all
    assert not np.isnan(s).any()
    assert not np.isnan(_np(be, lse)).any()


# --------------------------------------------------------------------------
# accuracy of the log1p form
# --------------------------------------------------------------------------


def test_log1p_form_float64(be):
    with mpmath.workprec(200):
        want = float(mpmath.nstr(mpmath.log1p(mpmath.exp(-40)), 40))
    assert want == pytest.approx(4.248354255291589e-18, rel=1e-15)
    x = be.asarray(np.array([0.0, -40.0]), dtype="float64")
    got = float(_np(be, sx.logsumexp(x)))
    assert got == pytest.approx(want, rel=1e-15, abs=0.0)
    assert got == pytest.approx(4.248354255291589e-18, rel=1e-15, abs=0.0)
    # the same through return_sign, a masked third entry and a weight of 1
    x3 = be.asarray(np.array([0.0, -40.0, 5.0]), dtype="float64")
    lse, sign = sx.logsumexp(
        x3,
        b=be.asarray(np.ones(3), dtype="float64"),
        where=be.asarray(np.array([True, True, False])),
        return_sign=True,
    )
    assert float(_np(be, lse)) == pytest.approx(want, rel=1e-15, abs=0.0)
    assert float(_np(be, sign)) == 1.0


def test_log1p_form_float32_within_2_ulp(be):
    with mpmath.workprec(200):
        want = float(mpmath.nstr(mpmath.log1p(mpmath.exp(-20)), 40))
    x = be.asarray(np.array([0.0, -20.0]), dtype="float32")
    got = _np(be, sx.logsumexp(x)).astype(np.float64)
    ulp = float(_ulp(np.array(want), "float32"))
    assert abs(float(got) - float(np.float32(want))) <= 2 * ulp


# --------------------------------------------------------------------------
# complex input
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cname", ["complex128", "complex64"])
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_complex_matches_scipy(be, cname, axis):
    rng = np.random.default_rng(9)
    # small phases keep every sum away from the branch cut of the complex log
    z = _grid((3, 4), seed=10) + 1j * rng.uniform(-0.5, 0.5, size=(3, 4))
    z = z.astype(cname).astype(np.complex128)  # the values the backend holds
    x = be.asarray(z, dtype=be.dtype(cname))
    ref = scipy.special.logsumexp(z, axis=axis)
    out = sx.logsumexp(x, axis=axis)
    _check_array(be, out, x, np.shape(ref), be.dtype(cname))
    u = 2.0 ** -(53 if cname == "complex128" else 24)
    n = math.prod(z.shape[a] for a in _axes(axis, 2))
    m = np.max(z.real, axis=axis)
    # each exp is good to a few u, the sum of terms of near-equal phase to (n + 4) u,
    # and m + log(S) adds u (|m| + |log S|); SciPy's complex128 answer carries as much
    bound = 2 * u * ((n + 8) + np.abs(m) + np.abs(ref))
    assert np.all(np.abs(_np(be, out).astype(np.complex128) - ref) <= bound)
    lse, sign = sx.logsumexp(x, axis=axis, return_sign=True)
    rlse, rsign = scipy.special.logsumexp(z, axis=axis, return_sign=True)
    real = "float64" if cname == "complex128" else "float32"
    _check_array(be, lse, x, np.shape(rlse), be.dtype(real))
    _check_array(be, sign, x, np.shape(rsign), be.dtype(cname))
    assert np.all(np.abs(_np(be, lse) - rlse) <= bound)
    assert np.all(
        np.abs(_np(be, sign).astype(np.complex128) - rsign) <= 2 * u * (n + 8)
    )


def test_complex_masked_entries_ignored(be):
    z = np.array([[1 + 0.25j, 2 - 0.5j, complex(NAN, NAN)], [0.5j, 3.0 + 0j, 1 - 0.1j]])
    mask = np.array([[True, True, False], [True, False, True]])
    x = be.asarray(z, dtype=be.dtype("complex128"))
    out = _np(be, sx.logsumexp(x, axis=-1, where=be.asarray(mask)))
    want = np.array([scipy.special.logsumexp(z[i][mask[i]]) for i in range(2)])
    assert np.all(np.abs(out - want) <= 2 * 2.0**-53 * (8 + np.abs(want) + 3))


# --------------------------------------------------------------------------
# keepdims, default axis, dtypes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (), (2, 1, 0)])
def test_keepdims(be, axis):
    x64 = _grid((2, 3, 4), seed=11)
    b64 = _grid((3, 4), seed=12, lo=1, hi=16)
    x = be.asarray(x64, dtype="float64")
    ref = scipy.special.logsumexp(x64, axis=axis, keepdims=True)
    out = sx.logsumexp(x, axis=axis, keepdims=True)
    _check_array(be, out, x, np.shape(ref), be.dtype("float64"))
    assert_lse(
        be,
        out,
        ref,
        "float64",
        np.reshape(lse_bound(x64, None, axis, "float64"), np.shape(ref)),
    )
    # weighted, with the sign: both keep the dimensions
    ref, rsign = scipy.special.logsumexp(
        x64, axis=axis, b=b64, keepdims=True, return_sign=True
    )
    lse, sign = sx.logsumexp(
        x,
        axis=axis,
        b=be.asarray(b64, dtype="float64"),
        keepdims=True,
        return_sign=True,
    )
    _check_array(be, lse, x, np.shape(ref), be.dtype("float64"))
    _check_array(be, sign, x, np.shape(ref), be.dtype("float64"))
    assert_lse(
        be,
        lse,
        ref,
        "float64",
        np.reshape(lse_bound(x64, b64, axis, "float64"), np.shape(ref)),
    )
    assert_array_equal(_np(be, sign), rsign)


def test_default_axis_reduces_everything(be):
    for shape in ((5,), (2, 3), (2, 3, 4)):
        x64 = _grid(shape, seed=13)
        x = be.asarray(x64, dtype="float64")
        out = sx.logsumexp(x)
        _check_array(be, out, x, (), be.dtype("float64"))
        assert_lse(
            be,
            out,
            scipy.special.logsumexp(x64),
            "float64",
            lse_bound(x64, None, None, "float64"),
        )


def test_dtype_promotion_with_b(be):
    """x and b promote together (array API type promotion): the wider float wins."""
    x64 = _grid((3, 4), seed=14)
    b64 = _grid((3, 4), seed=15, lo=1, hi=16)
    pairs = [
        ("float32", "float64", "float64"),
        ("float64", "float32", "float64"),
        ("float32", "float32", "float32"),
    ]
    if "float16" in be.float_dtypes:
        pairs += [("float16", "float32", "float32"), ("float32", "float16", "float32")]
    for xn, bn, outn in pairs:
        x, b = be.asarray(x64, dtype=xn), be.asarray(b64, dtype=bn)
        for return_sign in (False, True):
            out = sx.logsumexp(x, axis=-1, b=b, return_sign=return_sign)
            lse = out[0] if return_sign else out
            _check_array(be, lse, x, (3,), be.dtype(outn))
            ref = scipy.special.logsumexp(x64, axis=-1, b=b64)
            assert_lse(be, lse, ref, outn, lse_bound(x64, b64, -1, outn))


@pytest.mark.parametrize("int_name", ["int32", "int64", "bool"])
def test_integer_x(be, int_name):
    x64 = np.array([[1, 0, 3, 1], [2, 2, 0, 0], [0, 0, 0, 5]], dtype=np.float64)
    if int_name == "bool":
        x64 = (x64 > 1).astype(np.float64)
    x = be.asarray(x64.astype(int_name), dtype=be.dtype(int_name))
    name = be.dtype_name(be.default_float)
    out = sx.logsumexp(x, axis=-1)
    _check_array(be, out, x, (3,), be.default_float)
    assert_lse(
        be,
        out,
        scipy.special.logsumexp(x64, axis=-1),
        name,
        lse_bound(x64, None, -1, name),
    )
    # with weights of the default float dtype the result stays in it
    b64 = np.array([1.0, -0.5, 2.0, 0.25])
    b = be.asarray(b64, dtype=be.default_float)
    lse, sign = sx.logsumexp(x, axis=-1, b=b, return_sign=True)
    _check_array(be, lse, x, (3,), be.default_float)
    rl, rs = scipy.special.logsumexp(x64, axis=-1, b=b64, return_sign=True)
    assert_lse(be, lse, rl, name, lse_bound(x64, b64, -1, name))
    assert_array_equal(_np(be, sign), rs)


def test_dtype_keyword(be):
    x64 = _grid((3, 4), seed=16)
    x = be.asarray(x64, dtype="float32")
    for name, dt in be.float_dtypes.items():
        out = sx.logsumexp(x, axis=-1, dtype=dt)
        _check_array(be, out, x, (3,), dt)
        assert_lse(
            be,
            out,
            scipy.special.logsumexp(x64, axis=-1),
            name,
            lse_bound(x64, None, -1, name),
        )


def test_half_weights_accumulate_in_float32(be):
    """A float16 row of 70,000 zeros with unit weights: float16(log 70000) exactly."""
    if "float16" not in be.float_dtypes:
        pytest.skip(f"{be.name} has no float16")
    x = be.asarray(np.zeros(70_000), dtype="float16")
    b = be.asarray(np.ones(70_000), dtype="float16")
    lse, sign = sx.logsumexp(x, b=b, return_sign=True)
    assert lse.dtype == be.float_dtypes["float16"]
    assert float(_np(be, lse)) == float(np.float16(math.log(70_000)))
    assert float(_np(be, sign)) == 1.0


# (x in float32, b or None, lse rounded to float16, exact sign): every total
# here is a positive or negative number far below float16's range (e^-70000)
NARROW_SIGN_CASES = [
    ("issue", [-70000.0], None, -INF, 1.0),
    ("two", [-70000.0, -70001.0], None, -INF, 1.0),
    ("nothing-left", [-INF, -INF], None, -INF, 0.0),
    ("weighted", [-70000.0, -70001.0], [2.0, 3.0], -INF, 1.0),
    ("negative", [-70000.0, -70001.0], [-2.0, 1.0], -INF, -1.0),
    ("cancelling", [-70000.0, -70000.0], [1.0, -1.0], -INF, 0.0),
]


@pytest.mark.parametrize("path", ["fast", "generic"])
@pytest.mark.parametrize(
    ("x", "b", "lse", "sign"),
    [c[1:] for c in NARROW_SIGN_CASES],
    ids=[c[0] for c in NARROW_SIGN_CASES],
)
def test_sign_under_narrowing_dtype(be, path, x, b, lse, sign):
    """logsumexp(float32([-70000.]), dtype=float16, return_sign=True) gave sign 0.

    docs/decisions.md: the sign of the exact weighted total, even when the value rounds to
    -inf in the output dtype. Half precision computes in float32, where
    -70000 is representable; only the result is rounded.
    """
    target = "float16" if "float16" in be.float_dtypes else None
    if target is None:
        pytest.skip(f"{be.name} has no float16")
    xa = be.asarray(np.array(x), dtype="float32")
    kw: dict[str, Any] = {}
    if b is not None:
        kw["b"] = be.asarray(np.array(b), dtype="float32")
    with sx.force_generic(path == "generic"):
        got_lse, got_sign = sx.logsumexp(
            xa, dtype=be.dtype(target), return_sign=True, **kw
        )
    assert got_sign.dtype == be.dtype(target)
    assert float(_np(be, got_lse)) == lse
    assert float(_np(be, got_sign)) == sign


@pytest.mark.parametrize("path", ["fast", "generic"])
def test_narrowing_dtype_rounds_x_first(be, path):
    """dtype=float32 on float64 input rounds x first, as IEEE does, on every backend.

    -1e39 becomes -inf in float32, so nothing is left (sign 0), even where the
    core computes float32 logsumexp in float64 (NumPy); 1e39 becomes +inf.
    """
    if "float32" not in be.float_dtypes or "float64" not in be.float_dtypes:
        pytest.skip(f"{be.name} lacks float32 or float64")
    f32 = be.dtype("float32")
    with sx.force_generic(path == "generic"):
        xa = be.asarray(np.array([[-1e39, -1e39], [1e39, 0.0]]), dtype="float64")
        lse, sign = sx.logsumexp(xa, axis=-1, dtype=f32, return_sign=True)
        soft = sx.softmax(xa, axis=-1, dtype=f32)
    assert_array_equal(_np(be, lse), [-INF, INF])
    assert_array_equal(_np(be, sign), [0.0, 1.0])
    assert_array_equal(_np(be, soft), [[0.0, 0.0], [1.0, 0.0]])


@functools.cache
def _long_columns() -> tuple[np.ndarray, list[Any], np.ndarray]:
    """Two float64 columns of 100,000 normal values, their exact logsumexp and
    the exact log_softmax of the second (of the rounded shift, see _reference)."""
    from _reference import mp_log_softmax_rounded_shift, mp_logsumexp

    x = np.random.default_rng(3).normal(size=(100_000, 2))
    lse = [mp_logsumexp(x[:, j]) for j in range(2)]
    return x, lse, mp_log_softmax_rounded_shift(x[:, 1])


@pytest.mark.parametrize("path", ["generic", "fast"])
def test_long_columns_float64(be, path):
    """Down a column NumPy's sum adds one row after another (pairwise only along
    a contiguous axis): the generic core reached 12 ulp for logsumexp and 12.8
    relative ulp for log_softmax on these columns before it summed pairwise."""
    from _reference import rel_error, ulp_error

    if "float64" not in be.float_dtypes:
        pytest.skip(f"{be.name} has no float64")
    x64, exact_lse, exact_ls = _long_columns()
    x = be.asarray(x64, dtype="float64")
    with sx.force_generic(path == "generic"):
        lse = _np(be, sx.logsumexp(x, axis=0))
        ls = _np(be, sx.log_softmax(x, axis=0))
    for j in range(2):
        err = float(ulp_error(lse[j], exact_lse[j], "float64"))
        assert err <= 2.0, f"logsumexp column {j}: {err:.2f} ulp"
    err = float(np.max(rel_error(ls[:, 1], exact_ls, "float64")))
    assert err <= 4.0, f"log_softmax column 1: {err:.2f} relative ulp"
