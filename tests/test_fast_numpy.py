"""The NumPy fast path (``softmax_xp._fast.numpy``): the generic answer, slab by slab.

Every test runs the public functions on the fast path and again under
``force_generic()`` on the same input. Special values (NaN, +-inf, exact
zeros) must sit in the same places; finite values may differ only by the
order of summation (the generic core sums whole slices, the kernel sums
slabs, BLAS blocks and chunks), within ``_rtol`` below. Most tests shrink the
slab to a few KiB so that small arrays cross every slab boundary: many short
rows per slab, rows longer than a slab (the chunked path), ``(o, N, i)`` boxes
and column blocks. A few run the default slab on larger arrays.

Also tested: the input is never written (read-only, non-contiguous,
negative-stride, Fortran-order and broadcast inputs) and the output never
aliases it; no full-size temporary beyond the output (tracemalloc: NumPy
reports its array allocations to it); concurrent calls from 8 threads give
the serial answers; the caller's NumPy error state and buffer size survive.
"""

from __future__ import annotations

import importlib.util
import math
import threading
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import needs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import softmax_xp as sx
from softmax_xp._fast import numpy as fast_numpy
from softmax_xp._validation import prepare, prepare_logsumexp

pytestmark = needs("numpy")

NAN, INF = math.nan, math.inf
KINDS = ("softmax", "log_softmax", "softmin", "logsumexp")


@pytest.fixture
def tiny_slabs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slabs of 2 KiB and column blocks 16 wide: every path on small arrays."""
    monkeypatch.setattr(fast_numpy, "SLAB_BYTES", 2048)
    monkeypatch.setattr(fast_numpy, "LONG_INNER", 16)
    monkeypatch.setattr(fast_numpy, "SMALL", 64)  # tune the buffer size too


# --------------------------------------------------------------------------
# helpers


def _finfo(dtype: Any) -> Any:
    if np.dtype(dtype).name == "bfloat16":  # NumPy's finfo does not know it
        return pytest.importorskip("ml_dtypes").finfo(dtype)
    return np.finfo(dtype)


def _eps(dtype: Any) -> float:
    return float(np.finfo(np.float32 if _is_half(dtype) else dtype).eps)


def _is_half(dtype: Any) -> bool:
    return np.dtype(dtype).itemsize == 2


def _rtol(compute: Any, n: int, *, pairwise: bool) -> float:
    """The allowance for two summation orders of ``n`` positive terms.

    Where the generic core sums contiguous slices (NumPy's pairwise sum) the
    two orders differ by a few ulps, growing like ``log2(n)``; a slice that is
    not contiguous is summed sequentially, whose rounding grows like
    ``sqrt(n)`` ulps on random data, and the kernel's sums differ from it by
    as much.
    """
    growth = math.log2(n) if pairwise else 2.0 * math.sqrt(n)
    return _eps(compute) * (8.0 + growth)


def _slice_size(shape: tuple[int, ...], axis: Any) -> int:
    if axis is None:
        return math.prod(shape)
    axes = axis if isinstance(axis, tuple) else (axis,)
    return math.prod(shape[a] for a in axes)


def _run(kind: str, x: Any, axis: Any, *, generic: bool = False, **kw: Any) -> Any:
    """One public call, on the fast path (even under SOFTMAX_XP_FORCE_GENERIC=1)."""
    with sx.force_generic(generic):
        if kind == "logsumexp":
            return sx.logsumexp(x, axis=axis, **kw)
        return getattr(sx, kind)(x, axis, **kw)


def _both(kind: str, x: Any, axis: Any, **kw: Any) -> tuple[Any, Any]:
    fast = _run(kind, x, axis, **kw)
    return fast, _run(kind, x, axis, generic=True, **kw)


def _assert_same(
    fast: Any, generic: Any, *, kind: str, compute: Any, n: int, pairwise: bool
) -> None:
    """Special values in the same places, finite values within ``_rtol``."""
    assert isinstance(fast, np.ndarray)
    assert fast.dtype == generic.dtype
    assert fast.shape == generic.shape
    a = np.asarray(fast, dtype=np.float64)
    b = np.asarray(generic, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg="NaN positions")
    for v in (INF, -INF, 0.0):
        np.testing.assert_array_equal(a == v, b == v, err_msg=f"positions of {v}")
    ok = np.isfinite(b)
    rtol = _rtol(compute, n, pairwise=pairwise)
    if _is_half(fast.dtype):  # each path rounds its float32 value once
        rtol += float(_finfo(fast.dtype).eps)
    # below the smallest normal number only absolute ulps of it make sense
    atol = float(_finfo(fast.dtype).smallest_subnormal) * 2
    if kind == "logsumexp":  # m + log1p(s') may cancel: errors scale with |m|
        atol += rtol * (1.0 + float(np.max(np.abs(b[ok]), initial=0.0)))
    err = np.abs(a[ok] - b[ok])
    bound = rtol * np.abs(b[ok]) + atol
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert (err <= bound).all(), (
        f"{kind}: fast {a[ok][worst]!r} vs generic {b[ok][worst]!r} "
        f"(bound {bound[worst]:.3g})"
    )


def _check(kind: str, x: Any, axis: Any, **kw: Any) -> None:
    fast, generic = _both(kind, x, axis, **kw)
    compute = np.float64 if np.dtype(generic.dtype) == np.float64 else np.float32
    if kind == "logsumexp" and np.dtype(x.dtype).kind == "f" and not _is_half(x.dtype):
        compute = np.float64  # float32 logsumexp is computed in float64 on NumPy
    n = _slice_size(np.shape(x), axis)
    _assert_same(
        fast,
        generic,
        kind=kind,
        compute=compute,
        n=max(n, 1),
        pairwise=_pairwise(x, axis),
    )


def _pairwise(x: Any, axis: Any) -> bool:
    """Whether the generic core's sums run over contiguous memory (pairwise)."""
    nd = np.ndim(x)
    axes = range(nd) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    red = sorted(a % nd for a in axes)
    return np.asarray(x).flags.c_contiguous and red == list(range(nd - len(red), nd))


def _special_slices(x: np.ndarray, axis: Any, rng: np.random.Generator) -> np.ndarray:
    """``x`` (float) with one special slice of each kind along ``axis``.

    The slices: a NaN, two +inf, all -inf, all +inf, one +inf and some -inf,
    all tied, the log1p pair ``[0, -40, -inf, ...]``, one -inf; the rest are
    left as they are. The kind of slice each batch index gets is shuffled,
    so the special slices land in different slabs.
    """
    nd = x.ndim
    axes = tuple(range(nd)) if axis is None else axis
    axes = tuple(a % nd for a in (axes if isinstance(axes, tuple) else (axes,)))
    if not axes or x.size == 0:
        return x
    moved = np.moveaxis(x, axes, tuple(range(nd - len(axes), nd))).copy()
    n = math.prod(moved.shape[nd - len(axes) :])
    rows = moved.reshape(-1, n)
    specials = [
        lambda r: r.__setitem__(rng.integers(n), NAN),
        lambda r: r.__setitem__(rng.choice(n, size=min(2, n), replace=False), INF),
        lambda r: r.fill(-INF),
        lambda r: r.fill(INF),
        lambda r: (r.fill(-INF), r.__setitem__(rng.integers(n), INF)),
        lambda r: r.fill(1.5),
        lambda r: (r.fill(-INF), r.__setitem__(slice(0, 2), [0.0, -40.0][:n])),
        lambda r: r.__setitem__(rng.integers(n), -INF),
    ]
    picks = rng.permutation(len(rows))[: len(specials)]
    for row, fill in zip(picks, specials, strict=False):
        fill(rows[row])
    return np.moveaxis(
        rows.reshape(moved.shape), tuple(range(nd - len(axes), nd)), axes
    )


def _data(
    shape: tuple[int, ...], axis: Any, dtype: Any, seed: int, special: bool = True
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 3.0 if _is_half(dtype) else 20.0
    x = np.asarray(rng.normal(0.0, scale, size=shape))
    kind = np.dtype(dtype).kind
    if kind == "b":
        return x > 0
    if kind in "iu":
        return np.round(np.abs(x) if kind == "u" else x).astype(dtype)
    if special:
        x = _special_slices(x, axis, rng)
    return x.astype(dtype)


LAYOUTS = {
    # name: (shape, axis)
    "rows": ((37, 100), -1),  # several rows per slab
    "short rows": ((600, 7), -1),  # many tiny rows
    "long rows": ((5, 1500), -1),  # each row longer than a slab: chunked
    "one long row": ((3000,), 0),
    "axis 0": ((300, 40), 0),  # columns: blocks of 16, chunks of rows
    "axis 0, narrow": ((70, 5), 0),
    "middle": ((6, 50, 20), 1),
    "boxes": ((50, 6, 7), 1),  # (o, N, i) boxes of several o
    "trailing pair": ((9, 8, 30), (1, 2)),
    "leading pair": ((8, 30, 9), (0, 1)),
    "all": ((20, 30), None),
    "none": ((20, 30), ()),
    "0-d": ((), None),
}


# --------------------------------------------------------------------------
# same answers as the generic core


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_layouts_and_special_slices(kind: str, layout: str) -> None:
    shape, axis = LAYOUTS[layout]
    for seed, dtype in enumerate((np.float64, np.float32)):
        x = _data(shape, axis, dtype, seed)
        _check(kind, x, axis)


ORDER_OPTIONS = [
    *((k, o) for k in KINDS for o in ("none", "mask", "row mask")),
    *((k, "temperature") for k in KINDS[:3]),
]


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize(
    "order", ["C", "F", "reversed", "strided", "transposed", "broadcast"]
)
@pytest.mark.parametrize("axis", [-1, 0, None, (0, 2), (1, 2)])
@pytest.mark.parametrize(("kind", "option"), ORDER_OPTIONS)
def test_memory_orders(kind: str, option: str, axis: Any, order: str) -> None:
    # masks and temperatures are C-ordered while x is not: they must follow
    # x's flips and axis order
    rng = np.random.default_rng(11)
    shape = (12, 18, 40)
    base = _special_slices(rng.normal(0.0, 10.0, size=shape), axis, rng)
    views = {
        "C": base,
        "F": np.asfortranarray(base),
        "reversed": base[::-1, :, ::-1],
        "strided": np.asfortranarray(np.repeat(base, 2, axis=1))[:, ::2, :],
        "transposed": np.ascontiguousarray(base.transpose(2, 0, 1)).transpose(1, 2, 0),
        "broadcast": np.broadcast_to(base[:1], base.shape),
    }
    kw: dict[str, Any] = {}
    if option == "mask":
        kw["where"] = rng.random(shape) < 0.7
    elif option == "row mask":
        kw["where"] = rng.random(shape[1:]) < 0.7
    elif option == "temperature":
        kw["temperature"] = rng.uniform(0.3, 3.0, size=shape)
    _check(kind, views[order], axis, **kw)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((4096, 96), -1),  # many slabs of short rows
        ((3, 70_000), -1),  # rows longer than the default slab
        ((300_000,), 0),
        ((20_000, 6), 0),  # long columns, narrow
        ((2, 40_000, 3), 1),
        ((700, 512), 0),
    ],
)
@pytest.mark.parametrize("kind", KINDS)
def test_default_slabs(kind: str, shape: tuple[int, ...], axis: Any) -> None:
    x = _data(shape, axis, np.float32, seed=5)
    _check(kind, x, axis)


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize(
    "dtype",
    ["float16", "bfloat16", "float32", "float64", "int32", "int64", "uint8", "bool"],
)
@pytest.mark.parametrize("layout", ["rows", "long rows", "axis 0", "short rows"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes(kind: str, layout: str, dtype: str) -> None:
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dt: Any = np.dtype(ml_dtypes.bfloat16)
    else:
        dt = np.dtype(dtype)
    shape, axis = LAYOUTS[layout]
    x = _data(shape, axis, dt, seed=7)
    _check(kind, x, axis)


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize(
    ("src", "dtype"),
    [("float64", "float32"), ("float32", "float16"), ("float64", "float16")],
)
@pytest.mark.parametrize("kind", KINDS)
def test_dtype_keyword_and_half_overflow(kind: str, src: str, dtype: str) -> None:
    # values far beyond float16's range: log_softmax/logsumexp results
    # overflow to +-inf there, rounded once and without a warning
    rng = np.random.default_rng(8)
    scales = np.array([[1.0], [1e5], [1e30]] * 13 + [[1.0]])
    x = (rng.normal(0.0, 1.0, size=(40, 90)) * scales).astype(src)
    for axis in (-1, 0):
        _check(kind, x, axis, dtype=np.dtype(dtype))


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("kind", KINDS)
def test_integers_with_a_half_dtype(kind: str) -> None:
    # integers reach a narrowing dtype= through the compute dtype, as in the
    # generic core (input_rounding); beyond float16's range they become +-inf
    x = np.random.default_rng(9).integers(-70_000, 70_000, size=(30, 50))
    for axis in (-1, 0):
        _check(kind, x, axis, dtype=np.dtype(np.float16))


def _masks(shape: tuple[int, int], rng: np.random.Generator) -> dict[str, Any]:
    full = rng.random(shape) < 0.6
    full[3] = False  # a fully masked row
    full[:, 2] = False  # and a fully masked column
    return {
        "full": full,
        "row-broadcast": rng.random(shape[1]) < 0.7,
        "column-broadcast": (rng.random(shape[0]) < 0.8)[:, None],
    }


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("mask", ["none", "full", "row-broadcast", "column-broadcast"])
@pytest.mark.parametrize(
    ("kind", "temperature"),
    [
        *(
            (k, t)
            for k in KINDS[:3]
            for t in ("none", "scalar", "rows", "full", "ints")
        ),
        ("logsumexp", "none"),  # logsumexp takes no temperature
    ],
)
@pytest.mark.parametrize("axis", [-1, 0])
def test_masks_and_temperature(
    kind: str, axis: int, temperature: str, mask: str
) -> None:
    rng = np.random.default_rng(9)
    for shape in ((30, 200), (200, 30)):  # long and short slices
        x = _data(shape, axis, np.float32, seed=9)
        x[0, 0] = NAN  # masked away where the mask is full
        kw: dict[str, Any] = {}
        if mask != "none":
            masks = _masks(shape, rng)
            masks["full"][0, 0] = False
            kw["where"] = masks[mask]
        if temperature == "scalar":
            kw["temperature"] = 0.37
        elif temperature == "rows":
            kw["temperature"] = rng.uniform(0.2, 3.0, size=(shape[0], 1))
        elif temperature == "full":
            t = rng.uniform(0.2, 3.0, size=shape).astype(np.float32)
            kw["temperature"] = t
        elif temperature == "ints":
            kw["temperature"] = rng.integers(1, 4, size=shape[1])
        _check(kind, x, axis, **kw)
        _check(kind, x.astype(np.float16), axis, **kw)


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (), (2, 1)])
def test_logsumexp_keepdims_and_sign(
    axis: Any, return_sign: bool, keepdims: bool
) -> None:
    x = _data((7, 30, 11), axis if axis is not None else None, np.float64, seed=12)
    kw = {"keepdims": keepdims, "return_sign": return_sign}
    for where in (None, np.random.default_rng(3).random(x.shape) < 0.5):
        fast, generic = _both("logsumexp", x, axis, where=where, **kw)
        if not return_sign:
            fast, generic = (fast,), (generic,)
        n = _slice_size(x.shape, axis)
        for f, g in zip(fast, generic, strict=True):
            _assert_same(
                f, g, kind="logsumexp", compute=np.float64, n=n, pairwise=False
            )


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("layout", ["rows", "long rows", "axis 0", "one long row"])
def test_log1p_form_in_every_path(layout: str) -> None:
    # logsumexp([0, -40, -inf, ...]) = log1p(e^-40) = 4.248e-18, not 0, and
    # log_softmax's largest entry keeps that relative precision, in every path
    shape, axis = LAYOUTS[layout]
    x = np.full(shape, -INF)
    lead = np.moveaxis(x, axis, -1)
    lead[..., 0] = 0.0
    lead[..., -1] = -40.0
    tiny = math.log1p(math.exp(-40.0))
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        lse = _run("logsumexp", xd, axis)
        np.testing.assert_allclose(lse, tiny, rtol=4 * _eps(dtype))
        top = np.moveaxis(_run("log_softmax", xd, axis), axis, -1)[..., 0]
        np.testing.assert_allclose(top, -tiny, rtol=4 * _eps(dtype))
        # a tie for the maximum: s' = 1 + e^-40, log1p(s') = log 2
        tied = np.moveaxis(xd.copy(), axis, -1)
        tied[..., 1] = 0.0
        lse2 = _run("logsumexp", np.moveaxis(tied, -1, axis), axis)
        np.testing.assert_allclose(lse2, math.log(2.0), rtol=2 * _eps(dtype))


# --------------------------------------------------------------------------
# coverage: what the fast path takes and what it leaves to the generic core


def _prepared(kind: str, x: Any, axis: Any, **kw: Any) -> Any:
    if kind == "logsumexp":
        return prepare_logsumexp(x, axis, kw.get("b"), kw.get("where"), None, None)
    return prepare(kind, x, axis, kw.get("where"), kw.get("temperature"), None, None)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_fast_path_covers_the_common_cases(kind: str) -> None:
    x = np.random.default_rng(0).normal(size=(6, 8, 10))
    covered = [
        (x, -1, {}),
        (x, 0, {}),
        (x, 1, {}),
        (x, (1, 2), {}),
        (x, (0, 1), {}),
        (x, None, {}),
        (x, (), {}),
        (np.asfortranarray(x), -1, {}),
        (x[::-1, :, ::2], -1, {}),
        (x.astype(np.float16), -1, {}),
        (x.astype(np.int64), 0, {}),
        (x, -1, {"where": x > 0}),
    ]
    if kind != "logsumexp":
        covered += [(x, -1, {"temperature": 2.0}), (x, 0, {"temperature": x + 9})]
    for arr, axis, kw in covered:
        call = _prepared(kind, arr, axis, **kw)
        assert fast_numpy.run(kind, call) is not NotImplemented, (arr.shape, axis, kw)


def test_generic_core_keeps_the_rare_cases() -> None:
    x = np.random.default_rng(0).normal(size=(6, 8, 10))
    rare = [
        ("logsumexp", _prepared("logsumexp", x, -1, b=x)),  # weights
        ("logsumexp", _prepared("logsumexp", x + 1j, -1)),  # complex
        ("softmax", _prepared("softmax", x, (0, 2))),  # kept axis in between
        ("softmax", _prepared("softmax", np.zeros((3, 0)), -1)),  # empty
    ]
    for kind, call in rare:
        assert fast_numpy.run(kind, call) is NotImplemented


# --------------------------------------------------------------------------
# memory: the input is only read, the output is fresh, nothing else is big


@pytest.mark.parametrize("kind", KINDS)
def test_input_is_never_written(kind: str) -> None:
    rng = np.random.default_rng(13)
    base = _special_slices(rng.normal(0.0, 5.0, size=(40, 300)), -1, rng)
    where = rng.random(base.shape) < 0.7
    t = rng.uniform(0.5, 2.0, size=(40, 1))
    layouts = {
        "C": base.copy(),
        "F": np.asfortranarray(base),
        "negative strides": base.copy()[::-1, ::-1],
        "strided": base.copy()[:, ::3],
        "broadcast": np.broadcast_to(base[0], base.shape),
        "float16": base.astype(np.float16),
    }
    for name, x in layouts.items():
        if x.flags.writeable:
            x.flags.writeable = False
        before = x.copy()
        extra = [{}, {"where": where[:, : x.shape[1]]}]
        if kind != "logsumexp":
            extra.append({"temperature": t})
        for kw in extra:
            for axis in (-1, 0, None):
                out = _run(kind, x, axis, **kw)
                np.testing.assert_array_equal(x, before, err_msg=name)
                assert not np.shares_memory(out, x), name
                assert out.flags.writeable
                for v in kw.values():
                    assert not np.shares_memory(out, v)


def _peak_during(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Peak traced allocation (bytes) while ``fn`` runs, and its result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with sx.force_generic(False):
            out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, out


def test_no_full_size_temporary() -> None:
    rng = np.random.default_rng(14)
    x = rng.normal(0.0, 3.0, size=(2048, 4096)).astype(np.float32)  # 32 MiB
    x[5, 7] = INF  # a special row: the recomputed slab stays slab-sized
    mask = rng.random(x.shape) < 0.9
    xf, x16 = np.asfortranarray(x), x.astype(np.float16)
    cases: dict[str, Callable[[], Any]] = {
        "softmax": lambda: sx.softmax(x),
        "softmax axis 0": lambda: sx.softmax(x, axis=0),
        "log_softmax": lambda: sx.log_softmax(x),
        "softmin, Fortran": lambda: sx.softmin(xf),
        "masked": lambda: sx.softmax(x, where=mask),
        "row mask": lambda: sx.log_softmax(x, where=mask[0]),
        "temperature": lambda: sx.softmax(x, temperature=np.full((2048, 1), 2.0)),
        "float16": lambda: sx.log_softmax(x16),
        "reversed": lambda: sx.softmax(x[::-1, ::-1], axis=0),
        "one long row": lambda: sx.softmax(x.reshape(-1)),
        "long rows": lambda: sx.log_softmax(x.reshape(8, -1)),
        "logsumexp": lambda: sx.logsumexp(x, axis=-1),
        "logsumexp axis 0": lambda: sx.logsumexp(x, axis=0, keepdims=True),
        "logsumexp all": lambda: sx.logsumexp(x),
    }
    sx.softmax(x[:2])  # a first call pays for lazy imports
    allowance = 4 * fast_numpy.SLAB_BYTES + (1 << 20)
    for name, fn in cases.items():
        peak, out = _peak_during(fn)
        limit = out.nbytes + allowance
        assert peak <= limit, (
            f"{name}: peak {peak / 2**20:.1f} MiB > {limit / 2**20:.1f}"
        )


# --------------------------------------------------------------------------
# threads and NumPy's per-thread state


def _tasks() -> list[tuple[str, np.ndarray, Any, dict[str, Any]]]:
    rng = np.random.default_rng(15)
    out = []
    for i, (shape, axis) in enumerate(
        [((300, 500), -1), ((500, 300), 0), ((10, 80_000), -1), ((100, 20, 30), 1)]
    ):
        x = _special_slices(rng.normal(0.0, 10.0, size=shape), axis, rng)
        for kind in KINDS:
            out.append((kind, x.astype(np.float32), axis, {}))
        out.append(("softmax", x.astype(np.float16), axis, {"temperature": 0.5 + i}))
        out.append(("log_softmax", x, axis, {"where": rng.random(shape) < 0.5}))
    return out


def test_concurrent_calls_match_serial_ones() -> None:
    tasks = _tasks()
    serial = [_run(kind, x, axis, **kw) for kind, x, axis, kw in tasks]
    results: list[list[Any]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for j in range(len(tasks)):  # each thread starts elsewhere
                kind, x, axis, kw = tasks[(j + 3 * k) % len(tasks)]
                results[k].append(((j + 3 * k) % len(tasks), _run(kind, x, axis, **kw)))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got in results:
        assert len(got) == len(tasks)
        for index, value in got:
            np.testing.assert_array_equal(value, serial[index])


def test_numpy_state_is_left_as_found() -> None:
    x = _data((300, 500), -1, np.float32, seed=16)  # special rows: the fallback runs
    before = (np.geterr(), np.getbufsize())
    for kind in KINDS:
        for axis in (-1, 0):
            _run(kind, x, axis)
    assert (np.geterr(), np.getbufsize()) == before


@pytest.mark.parametrize("kind", KINDS)
def test_callers_raise_setting_does_not_leak_in(kind: str) -> None:
    # underflow in exp and inf - inf inside the kernel are expected there; a
    # caller's np.errstate(all="raise") must not turn them into errors
    x = np.asarray([[0.0, -200.0, -1e30], [INF, 1.0, INF], [-INF, -INF, -INF]])
    for dtype in (np.float32, np.float64):
        for xd in (x[:1].astype(dtype), x.astype(dtype)):  # finite; special rows
            expected = _run(kind, xd, -1, generic=True)
            for arr in (xd, np.tile(xd, (4000, 1))):  # one slab, and many
                with np.errstate(all="raise"):
                    got = _run(kind, arr, -1)
                np.testing.assert_array_equal(got[: len(xd)], expected)


@pytest.mark.usefixtures("tiny_slabs")
@pytest.mark.parametrize("kind", KINDS[:3])
@pytest.mark.parametrize("axis", [-1, 0])
def test_temperature_divides_finite_values_only(kind: str, axis: int) -> None:
    # array temperatures are not validated: 0, -1, NaN or inf where x is
    # masked or infinite are never divided by, as in the generic core
    rng = np.random.default_rng(17)
    x = rng.normal(0.0, 5.0, size=(60, 50))
    x[::7, 3] = INF
    x[::5, 4] = -INF
    where = rng.random(x.shape) < 0.8
    t = rng.uniform(0.5, 2.0, size=x.shape)
    odd = ~where | ~np.isfinite(x)
    t[odd] = rng.choice([0.0, -1.0, -0.0, NAN, INF], size=int(odd.sum()))
    for dtype in (np.float64, np.float32, np.float16):
        _check(kind, x.astype(dtype), axis, where=where, temperature=t)
    t_at_inf = np.where(np.isfinite(x), rng.uniform(0.5, 2.0, size=x.shape), NAN)
    _check(kind, x, axis, temperature=t_at_inf)


@pytest.mark.parametrize("rows", [3, 3000])  # one small slab; many slabs
@pytest.mark.parametrize("kind", KINDS)
def test_extreme_finite_values(kind: str, rows: int) -> None:
    # x - max overflows to -inf (as IEEE rounds it) without a warning, and
    # maxima near the top of the range take the guarded path
    for dtype in (np.float32, np.float64):
        big = float(np.finfo(dtype).max)
        x = np.asarray(
            [[big, -big, 0.0], [-big, -big, -big / 2], [big / 2, big, 1e30]], dtype
        )
        _check(kind, np.tile(x, (rows // 3, 1)), -1)
        _check(kind, np.tile(x.T, (1, rows // 3)), 0)


# --------------------------------------------------------------------------
# NumPy before 2.1 (the floor is 2.0) has no reshape(copy=); 1.x a global buffer size

STATE_LAYOUTS = {
    # name: (array, axis, options); each large enough to tune the buffer size
    "rows": (lambda x: x, -1, {}),
    "axis 0": (lambda x: x, 0, {}),
    "fortran": (np.asfortranarray, -1, {}),
    "transposed": (lambda x: x.T, 0, {}),
    "negative strides": (lambda x: x[::-1, ::-2], 0, {}),
    "inner axis": (lambda x: x.reshape(20, 100, 200), 1, {}),
    "long rows": (lambda x: x.reshape(5, 80_000), -1, {}),
    "masked": (lambda x: x, 0, {"where": np.arange(2000) % 3 > 0}),
    "temperature": (lambda x: x, -1, {"temperature": 0.7}),
    "float16": (lambda x: x.astype(np.float16), 0, {}),
}


@pytest.mark.parametrize("layout", list(STATE_LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_buffer_size_is_restored_in_every_layout(kind: str, layout: str) -> None:
    # NumPy 2 restores the buffer size with np.errstate's context; 1.26 does
    # not, and the kernel's tuning leaked into the caller's later ufuncs
    make, axis, kw = STATE_LAYOUTS[layout]
    if kind == "logsumexp":
        kw = {k: v for k, v in kw.items() if k != "temperature"}
    x = make(_data((200, 2000), None, np.float32, seed=30))
    before = np.getbufsize()
    _run(kind, x, axis, **kw)
    assert np.getbufsize() == before


@pytest.mark.parametrize("layout", list(STATE_LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_layouts_without_reshape_copy(
    kind: str, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NumPy < 2.1 has no reshape(copy=False): views are made by setting the
    # shape of a view, and the layouts that need a copy still take the
    # generic core or a materialised mask (masked arrays, Fortran order
    # raised TypeError on 1.26)
    monkeypatch.setattr(fast_numpy, "_RESHAPE_COPY", False)
    make, axis, kw = STATE_LAYOUTS[layout]
    if kind == "logsumexp":
        kw = {k: v for k, v in kw.items() if k != "temperature"}
    x = make(_data((200, 2000), None, np.float64, seed=31, special=False))
    _check(kind, x, axis, **kw)


def test_reshaped_makes_views_or_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    # the NumPy < 2.1 branch always; reshape(copy=False) where NumPy has it
    for copy_kw in sorted({False, fast_numpy._RESHAPE_COPY}):
        monkeypatch.setattr(fast_numpy, "_RESHAPE_COPY", copy_kw)
        v = fast_numpy._reshaped(a.transpose(1, 0, 2), (3, 8))
        assert v is None  # axes 1 and 0 do not merge without a copy
        v = fast_numpy._reshaped(a, (6, 4))
        assert v is not None
        assert np.shares_memory(v, a)
        np.testing.assert_array_equal(v, np.arange(24.0).reshape(6, 4))
        assert a.shape == (2, 3, 4)  # the input's own shape is untouched


# --------------------------------------------------------------------------
# return_sign: the sign of the exact total, taken before rounding (docs/contract.md)


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((1,), -1), ((3,), -1), ((40, 3), 0), ((3, 40_000), -1), ((300, 200), 0)],
    ids=["one", "row", "column", "long rows", "columns"],
)
@pytest.mark.parametrize("src", [np.float32, np.float64])
def test_logsumexp_sign_before_rounding(
    shape: tuple[int, ...], axis: int, src: Any
) -> None:
    # -70000 is finite where float16 is computed (float32, or float64 for
    # logsumexp on NumPy); the total rounds to -inf in float16, but something
    # was left: sign 1. A slice of -inf only has nothing left: sign 0.
    x = np.full(shape, -70000.0, src)
    empty = (slice(None), 0) if axis == 0 else (0,) * (len(shape) - 1)
    x[empty] = -INF
    lse, sign = sx.logsumexp(x, axis=axis, dtype=np.float16, return_sign=True)
    assert lse.dtype == sign.dtype == np.float16
    expected = np.ones(lse.shape)
    expected[(0,) * lse.ndim] = 0.0
    if shape == (1,):  # the one entry is -inf
        expected[...] = 0.0
    np.testing.assert_array_equal(sign, expected)
    np.testing.assert_array_equal(lse, np.full(lse.shape, -INF))


def test_logsumexp_sign_nan_and_nothing_left_in_half() -> None:
    y = np.asarray([[NAN, -70000.0], [-INF, -INF], [0.0, -70000.0]], np.float32)
    lse, sign = sx.logsumexp(y, axis=-1, dtype=np.float16, return_sign=True)
    np.testing.assert_array_equal(sign, np.asarray([NAN, 0.0, 1.0], np.float16))
    np.testing.assert_array_equal(lse, np.asarray([NAN, -INF, 0.0], np.float16))


# --------------------------------------------------------------------------
# hunting: generated arrays, layouts and options, fast path against generic

POOL = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 40.0, -40.0, 700.0, -745.0, 1e30, -1e30]
POOL += [1e300, -1e300, 1e-300, 5e-324, 1e-40, -1e-40, INF, -INF, NAN]


def _layout(values: np.ndarray, layout: str) -> np.ndarray:
    """``values`` (float64, C order) in ``layout``: the same values, other strides."""
    if layout == "fortran":
        return np.asfortranarray(values)
    if layout == "transposed":
        return np.ascontiguousarray(values.T).T
    if layout == "negative strides" and values.ndim:
        flip = (slice(None, None, -1),) * values.ndim
        return np.ascontiguousarray(values[flip])[flip]
    if layout == "strided" and values.ndim:
        big = np.zeros((*values.shape[:-1], 2 * values.shape[-1]))
        big[..., ::2] = values
        return big[..., ::2]
    return values


@st.composite
def _generated(draw: Any) -> tuple[str, np.ndarray, Any, dict[str, Any]]:
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=4)))
    nd = len(shape)
    values = np.asarray(
        draw(
            st.lists(
                st.sampled_from(POOL),
                min_size=math.prod(shape),
                max_size=math.prod(shape),
            )
        ),
        dtype=np.float64,
    ).reshape(shape)
    if nd and shape[0] and draw(st.booleans()):  # a whole slice of one special value
        values[(draw(st.integers(0, max(shape[0] - 1, 0))),)] = draw(
            st.sampled_from([INF, -INF, NAN])
        )
    names = ["float16", "float32", "float64", "int32", "bool"]
    if importlib.util.find_spec("ml_dtypes"):
        names.append("bfloat16")
    dname = draw(st.sampled_from(names))
    if dname == "bool":
        x = values > 0
    elif dname == "int32":
        x = np.clip(np.nan_to_num(values), -50, 50).astype(np.int32)
    else:
        dt = np.dtype(dname) if dname != "bfloat16" else _bfloat16()
        with np.errstate(over="ignore"):
            x = values.astype(dt)
    x = _layout(
        x,
        draw(
            st.sampled_from(
                ["C", "fortran", "transposed", "negative strides", "strided"]
            )
        ),
    )
    kind = draw(st.sampled_from(KINDS))
    axis_kind = draw(st.sampled_from(["int", "tuple", "None", "()"]))
    if axis_kind == "None" or (nd == 0 and axis_kind != "()"):
        axis: Any = None
    elif axis_kind == "()":
        axis = ()
    elif axis_kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axis = tuple(draw(st.permutations(range(nd)))[: draw(st.integers(1, nd))])
    kw: dict[str, Any] = {}
    if draw(st.booleans()):  # a mask broadcast along some axes
        mshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
        kw["where"] = np.asarray(
            draw(
                st.lists(
                    st.booleans(),
                    min_size=math.prod(mshape),
                    max_size=math.prod(mshape),
                )
            ),
            dtype=bool,
        ).reshape(mshape)
    if kind == "logsumexp":
        kw["keepdims"] = draw(st.booleans())
        kw["return_sign"] = draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            kw["b"] = np.asarray(draw(st.sampled_from([0.0, 1.0, -1.0, 2.0])))
    else:
        t = draw(st.sampled_from([None, "float", "array"]))
        if t == "float":
            kw["temperature"] = draw(st.sampled_from([0.25, 1.0, 3.0]))
        elif t == "array":
            kw["temperature"] = np.random.default_rng(0).uniform(0.5, 2.0, shape)
    if draw(st.booleans()):
        kw["dtype"] = draw(
            st.sampled_from(
                [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
            )
        )
    return kind, x, axis, kw


def _bfloat16() -> Any:
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_generated())
def test_generated_cases_equal_generic(
    case: tuple[str, np.ndarray, Any, dict[str, Any]],
) -> None:
    kind, x, axis, kw = case
    note(f"{kind}(x={x!r}, axis={axis!r}, {kw!r}) strides={x.strides}")
    fast = _run(kind, x, axis, **kw)
    with warnings.catch_warnings():
        # the generic core's narrowing cast warns on overflow (reported in issue 10)
        warnings.simplefilter("ignore", RuntimeWarning)
        generic = _run(kind, x, axis, generic=True, **kw)
    pairs = (
        zip(fast, generic, strict=True)
        if isinstance(fast, tuple)
        else [(fast, generic)]
    )
    for f, g in pairs:
        a = np.asarray(f).astype(np.float64)
        b = np.asarray(g).astype(np.float64)
        assert np.asarray(f).dtype == np.asarray(g).dtype
        assert a.shape == b.shape
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg="NaN positions")
        for v in (INF, -INF, 0.0):
            np.testing.assert_array_equal(a == v, b == v, err_msg=f"positions of {v}")
        ok = np.isfinite(b)
        eps = (
            _eps(np.asarray(g).dtype)
            if not _is_half(np.asarray(g).dtype)
            else float(_finfo(np.asarray(g).dtype).eps)
        )
        tiny = float(_finfo(np.asarray(g).dtype).smallest_normal)
        scale = 1.0 if kind != "logsumexp" else 1.0 + np.max(np.abs(b[ok]), initial=0.0)
        np.testing.assert_allclose(
            a[ok], b[ok], rtol=8 * eps, atol=8 * eps * scale + tiny
        )
