"""The contract (docs/contract.md), row by row, on every backend of the matrix (the ``be`` fixture).

Every expected value comes from this module: hand-written special values, or an
mpmath reference of the contract table (``reference``) that removes masked
entries explicitly. Nothing is compared against softmax-xp's own output.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import mpmath
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import softmax_xp as sx

NAN, INF = math.nan, math.inf
LOG2, LOG3 = math.log(2.0), math.log(3.0)
FAMILY = ("softmax", "log_softmax", "softmin")
KINDS = (*FAMILY, "logsumexp")
HALF = ("float16", "bfloat16")
BF16_MAX = 3.3895313892515355e38  # (2 - 2**-7) * 2**127
# significand bits (implicit one included) and the smallest subnormal of each format
FORMATS = {
    "float16": (11, 2.0**-24),
    "bfloat16": (8, 2.0**-133),
    "float32": (24, 2.0**-149),
    "float64": (53, 2.0**-1074),
}


# --------------------------------------------------------------------------
# reference: the contract table, slice by slice, in mpmath
# --------------------------------------------------------------------------


def _to_float(v: Any) -> float:
    # through a decimal string: float() of a str rounds correctly (and overflows to inf)
    return float(mpmath.nstr(v, 40))


def _norm_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if not isinstance(axis, tuple):
        axis = (axis,)
    return tuple(int(a) % ndim for a in axis)


def _ref_row(kind: str, row: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, float]:
    """One slice of the table: (softmax-like output, logsumexp)."""
    if kind == "softmin":
        row, kind = -row, "softmax"
    log = kind != "softmax"
    out = np.full(row.shape, -INF if log else 0.0)
    if np.isnan(row[keep]).any():
        out[keep] = NAN
        return out, NAN
    top = keep & np.isposinf(row)
    if top.any():
        k = int(top.sum())
        out[top] = -math.log(k) if log else 1.0 / k
        return out, INF
    live = np.flatnonzero(keep & (row > -INF))
    if live.size == 0:
        return out, -INF
    with mpmath.workprec(256):
        m = mpmath.mpf(float(row[live].max()))
        shifted = {int(i): mpmath.mpf(float(row[i])) - m for i in live}
        total = mpmath.fsum(mpmath.exp(d) for d in shifted.values())
        log_total = mpmath.log(total)
        for i, d in shifted.items():
            out[i] = (
                _to_float(d - log_total) if log else _to_float(mpmath.exp(d) / total)
            )
        return out, _to_float(m + log_total)


def reference(kind: str, x: Any, axis: Any = -1, where: Any = None) -> np.ndarray:
    """The contract's answer for ``kind`` on float64 ``x``, masked entries removed."""
    x = np.asarray(x, dtype=np.float64)
    keep = np.ones(x.shape, bool) if where is None else np.asarray(where, dtype=bool)
    keep = np.broadcast_to(keep, x.shape)
    axes = _norm_axes(axis, x.ndim)
    rest = [d for d in range(x.ndim) if d not in axes]
    perm = [*rest, *axes]
    moved = np.transpose(x, perm).shape
    outer = moved[: len(rest)]
    n = math.prod(moved[len(rest) :])
    rows_x = np.transpose(x, perm).reshape(math.prod(outer), n)
    rows_k = np.transpose(keep, perm).reshape(math.prod(outer), n)
    res = [_ref_row(kind, r, k) for r, k in zip(rows_x, rows_k, strict=True)]
    if kind == "logsumexp":
        return np.array([lse for _, lse in res], dtype=np.float64).reshape(outer)
    flat = np.array([o for o, _ in res], dtype=np.float64).reshape(moved)
    return np.transpose(flat, np.argsort(perm))


# --------------------------------------------------------------------------
# comparison with dtype-derived tolerances
# --------------------------------------------------------------------------


def _round(v: Any, name: str) -> np.ndarray:
    """``v`` (float64) rounded to the nearest value of dtype ``name``, as float64."""
    v = np.asarray(v, dtype=np.float64)
    if name != "bfloat16":
        with np.errstate(over="ignore"):
            return v.astype(name).astype(np.float64)
    # bfloat16: 8 significant bits, ties to even (np.round); values here stay normal
    m, e = np.frexp(v)
    r = np.ldexp(np.round(m * 256.0) / 256.0, e)
    return np.where(np.abs(r) > BF16_MAX, np.copysign(INF, r), r)


def _ulp(v: np.ndarray, name: str) -> np.ndarray:
    bits, tiny = FORMATS[name]
    a = np.abs(v)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.maximum(np.exp2(e - (bits - 1)), tiny)


def unit(name: str) -> float:
    """Unit roundoff u of the dtype that *computes* ``name`` (half -> float32)."""
    return 2.0 ** -FORMATS["float32" if name in HALF else name][0]


def assert_contract(
    be: Any,
    got: Any,
    ref: Any,
    name: str,
    *,
    n: int = 1,
    rtol_extra: float = 0.0,
    atol: float = 0.0,
) -> None:
    """``got`` (a backend array of dtype ``name``) against the float64 ``ref``.

    NaN, infinities and zeros of ``ref`` rounded to ``name`` must match exactly.
    Half precision: within 1 ulp of the rounded reference (computed in float32,
    rounded once). float32/float64: Higham's bound for an ``n``-term sum plus
    exp, log and one division, (n + 4) u relative, plus ``rtol_extra`` / ``atol``
    where the test itself perturbs the input (a rounded ``x / temperature``),
    plus the smallest normal number absolutely (flush-to-zero of subnormals).
    """
    g = host(be, got).astype(np.float64)
    r = _round(ref, name)
    assert g.shape == r.shape, (g.shape, r.shape)
    special = np.isnan(r) | np.isinf(r) | (r == 0)
    assert_array_equal(g[special], r[special], err_msg=f"special values ({name})")
    fin = ~special
    gf, rf = g[fin], r[fin]
    if name in HALF:
        bound = _ulp(rf, name) + atol + rtol_extra * np.abs(rf)
    else:
        u = unit(name)
        # results below the smallest normal number may be flushed to zero (XLA on CPU does)
        bound = (
            ((n + 4) * u + rtol_extra) * np.abs(rf) + atol + float(np.finfo(name).tiny)
        )
    err = np.abs(gf - rf)
    bad = ~(err <= bound)
    assert not bad.any(), f"{name}: got {gf[bad]}, want {rf[bad]} (bound {bound[bad]})"


def host(be: Any, a: Any) -> np.ndarray:
    """``a`` as a NumPy array; host float arrays pass through (Dask computes once)."""
    if isinstance(a, np.ndarray | np.generic) and a.dtype.kind in "fc":
        return a
    return np.asarray(be.to_numpy(a))


def assert_meta(be: Any, out: Any, x: Any, shape: tuple[int, ...], dtype: Any) -> None:
    """Namespace, device, shape and dtype of ``out`` follow ``x``."""
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(x)
    assert out.dtype == dtype, (out.dtype, dtype)
    assert tuple(out.shape) == tuple(shape)
    assert array_api_compat.device(out) == array_api_compat.device(x)
    if be.device is not None:
        assert array_api_compat.device(out) == be.device
    if be.native is np:
        assert type(out) is np.ndarray  # never a NumPy scalar


def _arr(be: Any, data: Any, name: str | None = None) -> Any:
    return be.asarray(np.asarray(data, dtype=np.float64), dtype=name)


def _values(be: Any, x: Any) -> np.ndarray:
    """The float64 values that ``x`` really holds (after any rounding to its dtype)."""
    return np.asarray(be.to_numpy(x), dtype=np.float64)


def _grid(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # multiples of 1/8 in [-8, 8]: exact in every float dtype (bfloat16 included),
    # so x - max is exact and the reference sees exactly what the backend sees
    return np.random.default_rng(seed).integers(-64, 65, size=shape) / 8.0


def call(kind: str, x: Any, **kw: Any) -> Any:
    return getattr(sx, kind)(x, **kw)


# --------------------------------------------------------------------------
# the table's rows, hand-written
# --------------------------------------------------------------------------

# (slice, softmax, log_softmax, logsumexp); softmin is checked on the negated slice
SPECIAL_ROWS = [
    ([1.0, NAN, -INF, INF], [NAN] * 4, [NAN] * 4, NAN),  # NaN with infinities
    ([NAN], [NAN], [NAN], NAN),  # a lone NaN
    ([2.0, NAN, 3.0], [NAN] * 3, [NAN] * 3, NAN),  # NaN with finite values
    ([1.0, INF, -INF, 0.0], [0, 1, 0, 0], [-INF, 0, -INF, -INF], INF),  # one +inf
    # three +inf
    (
        [INF, 2.0, INF, INF],
        [1 / 3, 0, 1 / 3, 1 / 3],
        [-LOG3, -INF, -LOG3, -LOG3],
        INF,
    ),
    # +inf among -inf
    (
        [-INF, INF, -INF, INF],
        [0, 0.5, 0, 0.5],
        [-INF, -LOG2, -INF, -LOG2],
        INF,
    ),
    ([INF, INF], [0.5, 0.5], [-LOG2, -LOG2], INF),  # nothing but +inf
    ([-INF, 1.0, -INF], [0, 1, 0], [-INF, 0, -INF], 1.0),  # one finite among -inf
    # ties among -inf
    (
        [-INF, 0.0, -INF, 0.0],
        [0, 0.5, 0, 0.5],
        [-INF, -LOG2, -INF, -LOG2],
        LOG2,
    ),
    ([7.0], [1.0], [0.0], 7.0),  # a single finite entry
    ([-INF, -INF, -INF], [0, 0, 0], [-INF] * 3, -INF),  # nothing left: all -inf
    ([-INF], [0.0], [-INF], -INF),  # nothing left: a lone -inf
]
WIDTH = max(len(r[0]) for r in SPECIAL_ROWS)
# Batches are cut into (3, 4) blocks, the shape most tests use: on JAX every new
# shape compiles afresh, and the suite must stay fast.
BLOCK = 3


def blocks(*arrays: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Consecutive BLOCK-row pieces of same-length arrays."""
    n = len(arrays[0])
    return [tuple(a[i : i + BLOCK] for a in arrays) for i in range(0, n, BLOCK)]


def _special_batch(
    masked: bool,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The rows above as one (12, 4) batch, expected values, and the mask of real entries.

    The padding is a masked NaN (``masked``: it reads 0 / -inf) or a -inf, which
    changes no row's answer but joins the row (so it is NaN in a NaN row).
    """
    rows = []
    want: dict[str, list[list[float]]] = {"softmax": [], "log_softmax": []}
    for r, p, lp, _ in SPECIAL_ROWS:
        k = WIDTH - len(r)
        rows.append([*r, *[NAN if masked else -INF] * k])
        nan_row = not masked and any(math.isnan(v) for v in r)
        want["softmax"].append([*p, *[NAN if nan_row else 0.0] * k])
        want["log_softmax"].append([*lp, *[NAN if nan_row else -INF] * k])
    out = {kind: np.array(v, dtype=np.float64) for kind, v in want.items()}
    out["softmin"] = out["softmax"]
    out["logsumexp"] = np.array([lse for *_, lse in SPECIAL_ROWS])
    mask = np.array([[j < len(r) for j in range(WIDTH)] for r, *_ in SPECIAL_ROWS])
    return np.array(rows), out, mask


@pytest.mark.parametrize("axis", [-1, 0])
def test_special_rows(be, axis):
    """Each row of the table, as rows (axis=-1) or columns (axis=0), every float dtype."""
    data, want, _ = _special_batch(masked=False)
    # every dtype on rows; the transposed batch (the other reduction axis) in float64
    dtypes = be.float_dtypes if axis == -1 else {"float64": be.dtype("float64")}
    for name, dt in dtypes.items():
        for d, p, lp, lse in blocks(
            data, want["softmax"], want["log_softmax"], want["logsumexp"]
        ):
            exp = {"softmax": p, "softmin": p, "log_softmax": lp, "logsumexp": lse}
            if axis == 0:
                exp = {k: v.T for k, v in exp.items()}
            block = d.T if axis == 0 else d
            x = _arr(be, block, name)
            xneg = _arr(be, -block, name)  # softmin(-x) == softmax(x)
            for kind in KINDS:
                out = call(kind, xneg if kind == "softmin" else x, axis=axis)
                assert_meta(be, out, x, exp[kind].shape, dt)
                assert_contract(be, out, exp[kind], name, n=WIDTH)


def test_special_rows_masked(be):
    """The same rows padded with masked NaN: the padding reads 0 / -inf and leaks into no row."""
    data, want, mask = _special_batch(masked=True)
    for name in be.float_dtypes:
        for d, m, p, lp, lse in blocks(
            data, mask, want["softmax"], want["log_softmax"], want["logsumexp"]
        ):
            exp = {"softmax": p, "softmin": p, "log_softmax": lp, "logsumexp": lse}
            x = _arr(be, d, name)
            xneg = _arr(be, -d, name)
            for kind in KINDS:
                out = call(
                    kind, xneg if kind == "softmin" else x, axis=1, where=be.asarray(m)
                )
                assert_contract(be, out, exp[kind], name, n=WIDTH)


def test_nothing_left(be):
    """All -inf, or all masked whatever the masked entries hold."""
    junk = np.array(
        [[NAN, INF, -INF, 1.0], [-INF, -INF, -INF, -INF], [2.0, NAN, 3.0, -INF]]
    )
    for name, dt in be.float_dtypes.items():
        for kind in KINDS:
            # softmin sees -x: its "all -inf" row is all +inf in x
            x = _arr(be, -junk if kind == "softmin" else junk, name)
            fill = 0.0 if kind in ("softmax", "softmin") else -INF
            shape = (3,) if kind == "logsumexp" else (3, 4)
            wheres = [be.asarray(np.zeros((3, 4), bool))]
            if name == "float64":
                wheres += [
                    False,
                    [[False], [False], [False]],
                    be.asarray(np.zeros((1, 4), bool)),
                ]
            for where in wheres:
                out = call(kind, x, axis=-1, where=where)
                assert_meta(be, out, x, shape, dt)
                assert_contract(be, out, np.full(shape, fill), name)
            # the all -inf row, unmasked
            out = call(
                kind,
                x,
                axis=-1,
                where=be.asarray(np.array([[False] * 4, [True] * 4, [False] * 4])),
            )
            assert_contract(be, out, np.full(shape, fill), name)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((0,), -1),
        ((0,), None),
        ((3, 0), -1),
        ((3, 0), 1),
        ((2, 0, 3), 1),
        ((0, 3), 0),
        ((0, 3), -1),
        ((2, 0), None),
    ],
)
def test_empty_axis(be, shape, axis):
    x = be.asarray(np.zeros(shape), dtype="float32")
    dt = be.dtype("float32")
    for kind in KINDS:
        out = call(kind, x, axis=axis)
        want = reference(kind, np.zeros(shape), axis)
        assert_meta(be, out, x, want.shape, dt)
        if kind == "logsumexp":
            assert want.size == 0 or np.all(want == -INF)
        assert_contract(be, out, want, "float32")


def test_finite_rows(be):
    """The stable formula (row 3 of the table) on a random batch, every float dtype."""
    data = _grid((3, 4), seed=1)
    data[0] = [1010, 1000, 990, 1005]  # exp would overflow unshifted
    data[1, ::2] = -INF
    for name in be.float_dtypes:
        x = _arr(be, data, name)
        xv = _values(be, x)
        for kind in KINDS:
            for axis in (-1, 0):
                out = call(kind, x, axis=axis)
                n = data.shape[axis]
                assert_contract(be, out, reference(kind, xv, axis), name, n=n)


# values whose differences to the row max are exact or underflow exp entirely
def _palette(name: str) -> list[float]:
    big = {
        "float16": 65504.0,
        "bfloat16": 3.3895313892515355e38,
        "float32": 3.4028234663852886e38,
    }
    top = big.get(name, np.finfo(np.float64).max)
    return [0.0, 1.0, -1.0, 0.5, -2.0, 3.0, 1024.0, -1024.0, top, -top, INF, -INF]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("axis", [-1, 0, None])
def test_no_nan_unless_nan_in(be, seed, axis):
    """Mixed ±inf, huge and tiny values, NaN only under the mask: no NaN out, and the table's values."""
    rng = np.random.default_rng(seed)
    for name in be.float_dtypes:
        pal = _palette(name)
        data = rng.choice(pal, size=(3, 4))
        data[0] = -INF
        data[1, :2] = INF
        mask = rng.random((3, 4)) < 0.8
        mask[:, 0] = True
        data[~mask] = NAN
        mask_b = be.asarray(mask)
        x = _arr(be, data, name)
        xneg = _arr(be, -data, name)
        for kind in KINDS:
            xin = xneg if kind == "softmin" else x
            out = call(kind, xin, axis=axis, where=mask_b)
            got = host(be, out)
            assert not np.isnan(got).any(), f"{kind} {name}: NaN out of NaN-free slices"
            n = math.prod(data.shape[a] for a in _norm_axes(axis, 2))
            assert_contract(
                be, got, reference(kind, _values(be, xin), axis, mask), name, n=n
            )


# --------------------------------------------------------------------------
# where=
# --------------------------------------------------------------------------


def test_where_ignores_masked_garbage(be):
    data = np.array(
        [[1.0, NAN, 2.0, INF], [INF, -INF, 3.0, NAN], [NAN, INF, 0.5, -INF]]
    )
    mask = np.array(
        [
            [True, False, True, False],
            [False, True, True, False],
            [False, False, True, True],
        ]
    )
    for name in be.float_dtypes:
        x = _arr(be, data, name)
        xn = _arr(be, -data, name)
        for kind in KINDS:
            xin = xn if kind == "softmin" else x
            out = call(kind, xin, axis=-1, where=be.asarray(mask))
            ref = reference(kind, _values(be, xin), -1, mask)
            assert not np.isnan(ref).any()
            assert_contract(be, out, ref, name, n=4)
            if kind != "logsumexp":
                fill = 0.0 if kind != "log_softmax" else -INF
                assert np.all(be.to_numpy(out)[~mask] == fill)


@pytest.mark.parametrize(
    ("xshape", "wshape", "axis"),
    [
        ((3, 4), (4,), -1),
        ((3, 4), (1, 4), -1),
        ((3, 4), (3, 1), -1),
        ((3, 4), (3, 1), 0),
        ((3, 4), (), -1),
        ((2, 3, 4), (3, 1), (0, 2)),
        ((2, 3, 4), (4,), None),
        ((2, 3, 4), (2, 1, 4), 1),
    ],
)
def test_where_broadcasts(be, xshape, wshape, axis):
    data = _grid(xshape, seed=2)
    mask = np.asarray(np.random.default_rng(3).random(wshape) < 0.6)
    if wshape == (3, 1):
        mask[1] = False  # one fully masked row
    x = _arr(be, data, "float64")
    for kind in KINDS:
        out = call(kind, x, axis=axis, where=be.asarray(mask))
        ref = reference(kind, data, axis, mask)
        assert_meta(be, out, x, ref.shape, be.dtype("float64"))
        n = math.prod(xshape[a] for a in _norm_axes(axis, len(xshape)))
        assert_contract(be, out, ref, "float64", n=n)


@pytest.mark.parametrize(
    "where",
    [
        [True, False, True, True],
        [[True, False, True, True]],
        [[True], [False], [True]],
        True,
        False,
    ],
    ids=["list", "nested-list", "column-list", "True", "False"],
)
def test_where_python_objects(be, where):
    data = _grid((3, 4), seed=4)
    x = _arr(be, data, "float32")
    for kind in KINDS:
        out = call(kind, x, axis=-1, where=where)
        ref = reference(kind, data, -1, where)
        assert_meta(be, out, x, ref.shape, be.dtype("float32"))
        assert_contract(be, out, ref, "float32", n=4)


# --------------------------------------------------------------------------
# temperature=
# --------------------------------------------------------------------------


def _temperature_slack(name: str, z: np.ndarray, kind: str) -> dict[str, float]:
    """Error that rounding z = x / t (then z - max) in the compute dtype may cost.

    Each exponent moves by at most 6 u max|z| (z rounded twice when formed as
    x * (1/t), the max too, then the subtraction); softmax moves by twice that
    relatively, log_softmax absolutely.
    """
    zmax = float(np.max(np.abs(z[np.isfinite(z)]), initial=0.0))
    slack = 12 * unit(name) * zmax
    return {"atol": slack} if kind == "log_softmax" else {"rtol_extra": slack}


@pytest.mark.parametrize("t", [2.0, 0.5, 4, 3.0, 0.1])
@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_scalar(be, kind, t):
    data = _grid((3, 4), seed=5)
    data[0, 1] = INF
    data[2, 3] = -INF
    exact = math.log2(t).is_integer()
    for name in be.float_dtypes:
        x = _arr(be, data, name)
        # float64, as the contract's "result of x / temperature"
        z = _values(be, x) / float(t)
        out = call(kind, x, temperature=t)
        assert_meta(be, out, x, data.shape, be.float_dtypes[name])
        slack = {} if exact else _temperature_slack(name, z, kind)
        assert_contract(be, out, reference(kind, z), name, n=4, **slack)


@pytest.mark.parametrize(
    ("tshape", "as_list"),
    [
        ((4,), False),
        ((3, 1), False),
        ((3, 4), False),
        ((1, 4), False),
        ((4,), True),
        ((), False),
    ],
)
@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_array(be, kind, tshape, as_list):
    data = _grid((3, 4), seed=6)
    rng = np.random.default_rng(7)
    t64 = np.asarray(rng.choice([0.25, 0.5, 1.0, 2.0, 3.0, 8.0], size=tshape))
    for name in be.float_dtypes:
        x = _arr(be, data, name)
        z = _values(be, x) / t64
        # a float64 temperature does not change the output dtype
        t = t64.tolist() if as_list else be.asarray(t64, dtype="float64")
        out = call(kind, x, temperature=t)
        assert_meta(be, out, x, data.shape, be.float_dtypes[name])
        assert_contract(
            be, out, reference(kind, z), name, n=4, **_temperature_slack(name, z, kind)
        )


def test_temperature_with_mask_ignores_masked_temperatures(be):
    data = np.array([[1.0, 2.0, NAN, 0.5], [3.0, -1.0, 2.0, 1.0], [INF, 1.0, 2.0, 3.0]])
    mask = np.array(
        [
            [True, True, False, True],
            [True, False, True, True],
            [False, True, True, False],
        ]
    )
    # temperatures <= 0 only under the mask
    t = np.array([[2.0, 0.5, 0.0, 1.0], [1.0, 0.0, 4.0, 0.25], [0.0, 1.0, 2.0, -1.0]])
    x = _arr(be, data, "float64")
    for kind in FAMILY:
        out = call(kind, x, temperature=be.asarray(t), where=be.asarray(mask))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = data / t
        assert_contract(be, out, reference(kind, z, -1, mask), "float64", n=4)


def test_temperature_half_does_not_overflow(be):
    """x / temperature is formed in float32 for half inputs."""
    if "float16" not in be.float_dtypes:
        pytest.skip(f"{be.name} has no float16")
    x = _arr(be, [60000.0, 59000.0, 65504.0, -65504.0], "float16")
    z = _values(be, x) / 0.5  # 1.2e5: beyond float16's range, not float32's
    for kind in FAMILY:
        out = call(kind, x, temperature=0.5)
        assert_meta(be, out, x, (4,), be.float_dtypes["float16"])
        assert not np.isnan(be.to_numpy(out)).any()
        assert_contract(be, out, reference(kind, z), "float16", n=4)


def test_softmin_is_softmax_of_negated(be):
    data = _grid((3, 4), seed=8)
    for name in be.float_dtypes:
        x = _arr(be, data, name)
        for t in (None, 3.0):
            z = -_values(be, x) / (1.0 if t is None else t)
            out = sx.softmin(x, temperature=t)
            slack = {} if t is None else _temperature_slack(name, z, "softmin")
            assert_contract(be, out, reference("softmax", z), name, n=4, **slack)


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------


def test_same_float_dtype_out(be):
    data = _grid((3, 4), seed=9)
    for name, dt in be.float_dtypes.items():
        x = _arr(be, data, name)
        for kind in KINDS:
            out = call(kind, x)
            assert_meta(be, out, x, () if kind == "logsumexp" else data.shape, dt)
            axis = None if kind == "logsumexp" else -1
            n = 12 if kind == "logsumexp" else 4
            assert_contract(be, out, reference(kind, _values(be, x), axis), name, n=n)


def test_float16_accumulates_in_float32(be):
    if "float16" not in be.float_dtypes:
        pytest.skip(f"{be.name} has no float16")
    x = be.asarray(np.zeros(70_000), dtype="float16")
    want_p = float(np.float16(1 / 70_000))
    want_lse = float(np.float16(math.log(70_000)))
    for kind, want in [
        ("softmax", want_p),
        ("softmin", want_p),
        ("log_softmax", -want_lse),
        ("logsumexp", want_lse),
    ]:
        got = be.to_numpy(call(kind, x, axis=-1))
        assert np.all(got.astype(np.float64) == want), (kind, np.unique(got))


def test_bfloat16_accumulates_in_float32(be):
    if "bfloat16" not in be.float_dtypes:
        pytest.skip(f"{be.name} has no bfloat16")
    x = be.asarray(np.zeros(1000), dtype="bfloat16")
    want_p = float(_round(1e-3, "bfloat16"))
    want_lse = float(_round(math.log(1000), "bfloat16"))
    for kind, want in [
        ("softmax", want_p),
        ("log_softmax", -want_lse),
        ("logsumexp", want_lse),
    ]:
        out = call(kind, x, axis=-1)
        assert out.dtype == be.float_dtypes["bfloat16"]
        got = be.to_numpy(out)
        assert np.all(got.astype(np.float64) == want), (kind, np.unique(got))


@pytest.mark.parametrize("int_name", ["int32", "int64", "uint8", "bool"])
def test_integer_and_bool_input_give_default_float(be, int_name):
    data = np.array([[1, 0, 3, 1], [2, 2, 0, 0], [0, 0, 0, 5]])
    if int_name == "bool":
        data = data > 1
    x = be.asarray(data, dtype=be.dtype(int_name))
    name = be.dtype_name(be.default_float)
    for kind in KINDS:
        for axis in (-1, 0, None):
            out = call(kind, x, axis=axis)
            ref = reference(kind, data.astype(np.float64), axis)
            assert_meta(be, out, x, ref.shape, be.default_float)
            assert_contract(be, out, ref, name, n=12)


def test_dtype_keyword_picks_output_dtype(be):
    data = _grid((3, 4), seed=10)
    sources = [*be.float_dtypes, "int32"]
    for src in sources:
        x = be.asarray(np.rint(data) if src == "int32" else data, dtype=be.dtype(src))
        for name, dt in be.float_dtypes.items():
            # the input is cast to dtype= first (exact here), then computed as that dtype would be
            xv = _round(_values(be, x), name)
            for kind in KINDS:
                out = call(kind, x, axis=-1, dtype=dt)
                ref = reference(kind, xv, -1)
                assert_meta(be, out, x, ref.shape, dt)
                assert_contract(be, out, ref, name, n=4)


# --------------------------------------------------------------------------
# axes, 0-d, keepdims
# --------------------------------------------------------------------------

AXES = [
    *[((4,), a) for a in (0, -1, (-1,), None, ())],
    *[((3, 4), a) for a in (0, 1, -2, (0, 1), (1, 0), None, ())],
    *[
        ((2, 3, 4), a)
        for a in (0, 1, -1, (0, 2), (2, 0), (-1, -2), (0, 1, 2), None, ())
    ],
    ((2, 3, 4), np.int64(-2)),
    ((2, 3, 4), (np.int32(0), 2)),
]


def _axis_id(a):
    """The axis as written in the test, NumPy integers named (NumPy 1.26 prints them bare)."""
    if isinstance(a, np.integer):
        return f"np.{type(a).__name__}({int(a)})"
    if isinstance(a, tuple):
        return (
            "(" + ", ".join(_axis_id(i) for i in a) + ("," if len(a) == 1 else "") + ")"
        )
    return repr(a)


AXES_IDS = [f"{s}-{_axis_id(a)}" for s, a in AXES]
# the masked variant where a slice spans several axes (where= is orthogonal to the rest)
AXES_MASKED = [
    (s, a, m)
    for s, a in AXES
    for m in ((False, True) if isinstance(a, tuple) or a is None else (False,))
]
AXES_MASKED_IDS = [
    f"{s}-{_axis_id(a)}-{'masked' if m else 'plain'}" for s, a, m in AXES_MASKED
]


@pytest.mark.parametrize(("shape", "axis", "masked"), AXES_MASKED, ids=AXES_MASKED_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_axes(be, kind, shape, axis, masked):
    data = _grid(shape, seed=11)
    data.flat[::7] = -INF
    data.flat[3] = INF if masked else data.flat[3]
    mask = np.random.default_rng(12).random(shape) < 0.7 if masked else None
    n = math.prod(shape[a] for a in _norm_axes(axis, len(shape)))
    ref = reference(kind, data, axis, mask)
    x = _arr(be, data, "float64")
    kw = {} if mask is None else {"where": be.asarray(mask)}
    out = call(kind, x, axis=axis, **kw)
    assert_meta(be, out, x, ref.shape, be.dtype("float64"))
    assert_contract(be, out, ref, "float64", n=n)


@pytest.mark.parametrize(("shape", "axis"), AXES, ids=AXES_IDS)
def test_logsumexp_keepdims(be, shape, axis):
    data = _grid(shape, seed=13)
    x = _arr(be, data, "float64")
    out = sx.logsumexp(x, axis=axis, keepdims=True)
    ref = np.expand_dims(
        reference("logsumexp", data, axis), _norm_axes(axis, len(shape))
    )
    assert_meta(be, out, x, ref.shape, be.dtype("float64"))
    assert_contract(
        be,
        out,
        ref,
        "float64",
        n=math.prod(shape[a] for a in _norm_axes(axis, len(shape))),
    )


def test_logsumexp_defaults_to_all_axes(be):
    data = _grid((2, 3, 4), seed=14)
    x = _arr(be, data, "float64")
    out = sx.logsumexp(x)
    assert_meta(be, out, x, (), be.dtype("float64"))
    assert_contract(be, out, reference("logsumexp", data, None), "float64", n=24)


@pytest.mark.parametrize(
    ("value", "p", "logp"),
    [
        (1.5, 1.0, 0.0),
        (-INF, 0.0, -INF),
        (INF, 1.0, 0.0),
        (NAN, NAN, NAN),
        (-3.0, 1.0, 0.0),
    ],
)
@pytest.mark.parametrize("axis", [None, ()])
def test_zero_d(be, value, p, logp, axis):
    want = {
        "softmax": p,
        "log_softmax": logp,
        "softmin": {INF: 0.0, -INF: 1.0}.get(value, p),  # softmax(-x)
        "logsumexp": value,
    }
    for name, dt in be.float_dtypes.items():
        x = be.asarray(value, dtype=dt)
        for kind in KINDS:
            out = call(kind, x, axis=axis)
            assert_meta(be, out, x, (), dt)
            assert_contract(be, out, np.asarray(want[kind], dtype=np.float64), name)
            if name == "float64":  # a masked 0-d input has nothing left
                out = call(kind, x, axis=axis, where=False)
                assert_meta(be, out, x, (), dt)
                fill = 0.0 if kind in ("softmax", "softmin") else -INF
                assert_contract(be, out, np.asarray(fill), name)


def test_empty_tuple_axis_is_elementwise(be):
    data = np.array(
        [[1.0, INF, -2.0, 0.5], [-INF, NAN, 0.0, -1.0], [3.0, 2.0, 1.0, 0.0]]
    )
    want = {
        "softmax": [[1, 1, 1, 1], [0, NAN, 1, 1], [1, 1, 1, 1]],
        "softmin": [[1, 0, 1, 1], [1, NAN, 1, 1], [1, 1, 1, 1]],
        "log_softmax": [[0, 0, 0, 0], [-INF, NAN, 0, 0], [0, 0, 0, 0]],
        "logsumexp": data,
    }
    for name, dt in be.float_dtypes.items():
        x = _arr(be, data, name)
        for kind in KINDS:
            out = call(kind, x, axis=())
            assert_meta(be, out, x, data.shape, dt)
            assert_contract(be, out, np.asarray(want[kind], dtype=np.float64), name)


# --------------------------------------------------------------------------
# the input is untouched; the output is new; Python objects; xp=
# --------------------------------------------------------------------------


def _shares_memory(be: Any, a: Any, b: Any) -> bool:
    if be.native is np:
        return bool(np.shares_memory(a, b))
    if be.name.startswith("torch"):
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    if be.name.startswith("array_api_strict"):
        return bool(np.shares_memory(np.asarray(a._array), np.asarray(b._array)))
    return False  # JAX arrays are immutable; Dask builds a new graph


@pytest.mark.parametrize(
    ("kind", "kw"),
    [
        ("softmax", {}),
        ("log_softmax", {}),
        ("softmin", {}),
        ("softmax", {"axis": ()}),
        ("log_softmax", {"axis": ()}),
        ("logsumexp", {"axis": ()}),
        ("logsumexp", {"axis": 1, "keepdims": True}),
        ("softmax", {"temperature": 1.0}),
        ("softmax", {"dtype": "float64"}),
        ("logsumexp", {"axis": (), "dtype": "float64"}),
        ("log_softmax", {"where": "mask"}),
        ("logsumexp", {"axis": -1, "where": "mask"}),
    ],
)
def test_input_untouched_and_not_aliased(be, kind, kw):
    src = np.array(
        [[1.0, INF, -INF, 0.0], [NAN, 2.0, -3.0, 1.0], [0.5, 0.5, -1.0, 2.0]]
    )
    mask = np.array(
        [
            [True, True, False, True],
            [False, True, True, True],
            [True, True, True, False],
        ]
    )
    src1 = np.array([[2.0], [-1.0], [0.0]])
    for data in (src, src1):
        kw2 = dict(kw)
        if kw2.get("dtype") == "float64":
            kw2["dtype"] = be.dtype("float64")
        if kw2.get("where") == "mask":
            kw2["where"] = be.asarray(
                mask if data.shape == mask.shape else np.ones(data.shape, bool)
            )
        keep = data.copy()
        x = _arr(be, data, "float64")
        before = be.to_numpy(x)
        out = call(kind, x, **kw2)
        be.compute(out)
        assert out is not x
        assert not _shares_memory(be, out, x)
        assert_array_equal(be.to_numpy(x), before)
        assert_array_equal(data, keep)


@pytest.mark.parametrize("kind", KINDS)
def test_python_objects_become_numpy(kind):
    cases = [
        ([1.0, 2.0, 3.0], np.float64),
        ((1, 2, 3), np.float64),
        ([[1.0, -INF], [0.5, 2.0]], np.float64),
        ([True, False, True], np.float64),
        (np.array([1.5, 2.5], dtype=np.float32), np.float32),
    ]
    for obj, dt in cases:
        out = call(kind, obj)
        assert type(out) is np.ndarray
        assert out.dtype == dt
        data = np.asarray(obj, dtype=np.float64)
        axis = None if kind == "logsumexp" else -1
        ref = reference(kind, data, axis)
        assert out.shape == ref.shape
        name = np.dtype(dt).name
        assert_contract(_NUMPY, out, ref, name, n=data.size)
    # Python and NumPy scalars: 0-d arrays, never NumPy scalars
    for obj, dt in [(2.0, np.float64), (3, np.float64), (np.float32(1.5), np.float32)]:
        out = call(kind, obj, axis=None)
        assert type(out) is np.ndarray
        assert out.shape == ()
        assert out.dtype == dt
        want = (
            float(obj)
            if kind == "logsumexp"
            else (0.0 if kind == "log_softmax" else 1.0)
        )
        assert float(out) == want


class _NumpyBackend:
    """The bits of conftest's Backend that assert_contract needs, for plain NumPy."""

    @staticmethod
    def to_numpy(a: Any) -> np.ndarray:
        return np.asarray(a).copy()


_NUMPY = _NumpyBackend()


@pytest.mark.parametrize("which", ["native", "compat"])
@pytest.mark.parametrize("kind", KINDS)
def test_xp_keyword(be, kind, which):
    """xp= accepts the native module or the compat namespace; Python input is converted with it."""
    ns = be.native if which == "native" else be.xp
    data = [[1.0, 2.0, -INF, 0.0], [0.5, 0.25, 3.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    x = _arr(be, data, "float32")
    axis = None if kind == "logsumexp" else -1
    ref = reference(kind, data, axis)
    out = call(kind, x, axis=axis, xp=ns)
    assert_meta(be, out, x, ref.shape, be.dtype("float32"))
    assert_contract(be, out, ref, "float32", n=12 if axis is None else 4)
    out = call(kind, data, axis=axis, xp=ns)
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(x)
    assert out.dtype == be.default_float
    assert_contract(
        be, out, ref, be.dtype_name(be.default_float), n=12 if axis is None else 4
    )
