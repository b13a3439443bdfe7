"""The Dask fast path (``_fast/dask.py``) against the generic core it optimises.

The fast path summarises every slice by the streaming normaliser's
``(m, rest)`` state in one pass over the input (one task per block, merged
by ``dask.array.reduction``) and writes the output in one map over blocks;
when every reduced axis lies in one chunk it runs the NumPy path on each
block instead. Checked here: each input
chunk is read at most twice (by the graph, and by counting reads while
computing), nothing is computed during a call, and the answers equal the
generic core's (``softmax_xp.force_generic``) on the contract's special
slices, with masks, temperatures, every dtype, chunked and unevenly chunked
reduced axes, tuple axes and ``axis=None``. For whole-slice chunks the graph
is one layer of one task per block (as ``map_blocks(np.exp)``'s), built
without running the kernel, named from the input's name and the call's
parameters, and its blocks run the NumPy path under ``serial()``.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from _helpers import (
    FUNCS,
    KINDS,
    fast_paths_on,  # noqa: F401 - autouse: the fast path even when forced off
)
from _helpers import generic as _generic
from conftest import needs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import softmax_xp as sx

pytestmark = needs("dask")

NINF, INF, NAN = -np.inf, np.inf, np.nan


def _call(kind: str, x: Any, **kw: Any) -> Any:
    return FUNCS[kind](x, **kw) if kind in FUNCS else sx.logsumexp(x, **kw)


def _rows() -> np.ndarray:
    """(12, 10): ordinary rows and one per case of the contract table."""
    big = float(np.finfo(np.float64).max)
    rng = np.random.default_rng(5)
    return np.concatenate(
        [
            rng.normal(0.0, 3.0, (3, 10)),
            [
                [NAN] + [1.0] * 9,
                [INF, 1.0, 2.0, INF, NINF, 0.0, 3.0, 1.0, INF, 2.0],
                [NINF] * 10,
                [INF] * 10,
                [NINF, 0.5, NINF, 2.0, 2.0, NINF, 1.0, 2.0, NINF, 0.0],  # ties
                [0.0, -40.0] + [NINF] * 8,  # the log1p row
                [NINF] * 9 + [-big],  # the maximum is -max_float
                [big, -big, 0.0, 1.0, 2.0, 3.0, 4.0, -1.0, -2.0, 5.0],
                [
                    -745.0,
                    -700.0,
                    -720.0,
                    NINF,
                    -710.0,
                    -705.0,
                    -730.0,
                    -700.0,
                    0.0,
                    0.0,
                ],
            ],
        ]
    )


def _mask(shape: tuple[int, ...]) -> np.ndarray:
    m = np.random.default_rng(6).random(shape) < 0.7
    m[3, 0] = False  # the NaN masked away: a live row
    m[5, :] = False  # fully masked
    m[4, [0, 3]] = False  # two of the three +inf masked
    return m


def _dask(a: np.ndarray, chunks: Any) -> Any:
    import dask.array as da

    return da.from_array(a, chunks=chunks)


def _eps(dtype: Any) -> float:
    if np.dtype(dtype).name == "bfloat16":
        return 2.0**-7
    return float(np.finfo(dtype).eps)


def assert_same(fast: Any, generic: Any, dtype: Any) -> None:
    """Same dtype and shape, special values in the same places, the rest within a few eps."""
    import dask.array as da

    assert isinstance(fast, da.Array)
    assert fast.dtype == generic.dtype
    a = np.asarray(fast.compute()).astype(np.float64)
    b = np.asarray(generic.compute() if isinstance(generic, da.Array) else generic)
    b = b.astype(np.float64)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    for v in (INF, NINF, 0.0):
        np.testing.assert_array_equal(a == v, b == v, err_msg=f"positions of {v}")
    ok = np.isfinite(a)
    eps = _eps(dtype)
    # log outputs: absolute error relative to the largest magnitude in play
    scale = 1.0 + np.max(np.abs(b[ok]), initial=0.0)
    np.testing.assert_allclose(a[ok], b[ok], rtol=8 * eps, atol=8 * eps * scale)


class _ComputeForbidden(AssertionError):
    pass


@contextmanager
def _no_compute() -> Iterator[None]:
    """Fail on any Dask computation started inside the block."""
    import dask
    from dask.callbacks import Callback

    def refuse(*args: Any, **kwargs: Any) -> Any:
        msg = "a Dask graph was computed during a call"
        raise _ComputeForbidden(msg)

    with dask.config.set(scheduler=refuse), Callback(start=refuse):
        yield


# ===========================================================================
# Reads of the input, laziness, the path taken


CHUNKINGS = {
    "rows-whole": (4, 10),  # every slice in one block: the NumPy path per block
    "rows-split": (4, 3),  # uneven chunks along the reduced axis
    "single": (12, 10),
}


def _readers_per_chunk(out: Any, src: Any) -> Counter[Any]:
    """How many tasks of ``out``'s (unoptimised) graph take each chunk of ``src``."""
    from dask.core import get_dependencies

    graph = dict(out.__dask_graph__())
    counts: Counter[Any] = Counter(
        {k: 0 for k in graph if isinstance(k, tuple) and k[0] == src.name}
    )
    for key in graph:
        for dep in get_dependencies(graph, key):
            if dep in counts:
                counts[dep] += 1
    return counts


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_graph_reads_each_input_chunk_at_most_twice(kind: str, chunking: str) -> None:
    x = _dask(_rows(), CHUNKINGS[chunking])
    w = _dask(_mask((12, 10)), (6, 5))  # chunked differently from x
    variants: list[dict[str, Any]] = [{}, {"where": w}, {"axis": 0}, {"axis": None}]
    if kind != "logsumexp":
        variants.append({"temperature": _dask(np.linspace(1.0, 2, 12)[:, None], 4)})
    for kw in variants:
        out = _call(kind, x, **kw)
        reads = _readers_per_chunk(out[0] if isinstance(out, tuple) else out, x)
        assert reads, "the input is not in the graph"
        # logsumexp reads once; the others at most twice
        limit = 1 if kind == "logsumexp" else 2
        assert min(reads.values()) >= 1, (kw, reads)
        assert max(reads.values()) <= limit, (kw, reads)


@pytest.mark.parametrize("kind", KINDS)
def test_reads_counted_while_computing(kind: str) -> None:
    """An input whose blocks count how often they are made; optimised graphs too."""
    import dask
    import dask.array as da

    data = _rows()
    lock = threading.Lock()
    made: Counter[tuple[int, ...]] = Counter()

    def source(block: np.ndarray, block_info: Any = None) -> np.ndarray:
        with lock:
            made[tuple(block_info[0]["chunk-location"])] += 1
        return block.copy()

    base = da.from_array(data, chunks=(4, 3))
    for kw in ({"axis": -1}, {"axis": 0}, {"axis": None}, {"axis": -1, "where": True}):
        made.clear()
        x = base.map_blocks(source, dtype=data.dtype)
        out = _call(kind, x, **kw)
        for optimize in (True, False):
            made.clear()
            dask.compute(out, optimize_graph=optimize, scheduler="threads")
            assert set(made) == {(i, j) for i in range(3) for j in range(4)}
            limit = 1 if kind == "logsumexp" else 2
            assert max(made.values()) <= limit, (kw, optimize, made)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_is_computed_during_a_call(kind: str) -> None:
    """Blocks that raise when made, and a scheduler that refuses to run."""
    import dask.array as da

    def boom(block: np.ndarray) -> np.ndarray:
        msg = "a block of the input was computed"
        raise _ComputeForbidden(msg)

    for chunks in ((4, 10), (4, 3)):
        x = da.from_array(_rows(), chunks=chunks).map_blocks(boom, dtype=np.float64)
        w = da.from_array(_mask((12, 10)), chunks=chunks).map_blocks(boom, dtype=bool)
        with _no_compute():
            outs = [
                _call(kind, x, axis=-1),
                _call(kind, x, axis=0, where=w),
                _call(kind, x, axis=None),
            ]
            if kind == "logsumexp":
                outs += list(sx.logsumexp(x, axis=-1, return_sign=True))
            else:
                outs.append(_call(kind, x, temperature=1.5))
        for out in outs:
            assert isinstance(out, da.Array)
        with pytest.raises(_ComputeForbidden, match="block of the input"):
            outs[0].compute(scheduler="sync")


def test_fast_path_is_taken() -> None:
    """The summaries when a slice spans chunks; none when every slice is in one block."""
    split = _dask(_rows(), (4, 3))
    whole = _dask(_rows(), (4, 10))

    def layers(out: Any) -> str:
        return " ".join(out.__dask_graph__().layers)

    for kind in KINDS:
        assert "softmax-xp-summary" in layers(_call(kind, split, axis=-1)), kind
        assert "softmax-xp-summary" not in layers(_call(kind, whole, axis=-1)), kind
        assert "softmax-xp" in layers(_call(kind, whole, axis=-1)), kind
        generic = _generic(_call, kind, split, axis=-1)
        assert "softmax-xp" not in layers(generic), kind


# ---------------------------------------------------------------------------
# The graph of whole-slice chunks (issue 12): one layer, nothing run to build it


def _whole_slice_calls(kind: str) -> list[tuple[Any, dict[str, Any]]]:
    """Inputs whose reduced axis lies in one chunk: rows, columns, a cube."""
    cube = _dask(_rows().reshape(3, 4, 10), (1, 2, 10))
    kw: dict[str, Any] = {"keepdims": True} if kind == "logsumexp" else {}
    return [
        (_dask(_rows(), (4, 10)), {"axis": -1, **kw}),
        (_dask(_rows(), (5, 10)), {"axis": -1, **kw}),  # uneven row chunks
        (_dask(_rows(), (12, 3)), {"axis": 0, **kw}),  # whole columns
        (cube, {"axis": -1, **kw}),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_whole_slices_are_one_layer_over_the_input(kind: str) -> None:
    """Exactly one layer of one task per block on top of ``x``: no rechunk, no
    broadcast, no reduction; after optimisation as many tasks as
    ``map_blocks(np.exp)`` over the same input."""
    import dask
    import dask.array as da

    for x, kw in _whole_slice_calls(kind):
        out = _call(kind, x, **kw)
        graph = out.__dask_graph__()
        ours = [name for name in graph.layers if name != x.name]
        assert len(ours) == 1, (kw, list(graph.layers))
        assert ours[0].startswith(f"softmax-xp-{kind}-"), ours
        assert graph.dependencies[ours[0]] == {x.name}
        assert len(graph.layers[ours[0]]) == x.npartitions
        floor = da.map_blocks(np.exp, x, dtype=x.dtype)
        (opt,) = dask.optimize(out)
        (opt_floor,) = dask.optimize(floor)
        assert len(dict(opt.__dask_graph__())) == len(dict(opt_floor.__dask_graph__()))
        if kind != "logsumexp":
            assert out.chunks == x.chunks


@pytest.mark.parametrize("kind", KINDS)
def test_building_runs_no_kernel_and_blocks_run_serially(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No dummy run of the NumPy kernel to infer a dtype or meta while building;
    while computing, one NumPy call per block, each limited to one thread."""
    import dask

    from softmax_xp._fast import _parallel
    from softmax_xp._fast import dask as fast_dask

    calls: list[tuple[int, bool]] = []
    lock = threading.Lock()
    numpy_run = fast_dask.numpy_path.run
    inside = threading.local()

    @contextmanager
    def tracked_serial() -> Iterator[None]:
        with _parallel.serial():
            inside.serial = True
            try:
                yield
            finally:
                inside.serial = False

    def counting(*args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append((_parallel.max_threads(), getattr(inside, "serial", False)))
        return numpy_run(*args, **kwargs)

    monkeypatch.setattr(fast_dask, "serial", tracked_serial)
    monkeypatch.setattr(fast_dask.numpy_path, "run", counting)
    for x, kw in _whole_slice_calls(kind):
        calls.clear()
        with sx.num_threads(4):  # the caller's cap does not reach the blocks
            out = _call(kind, x, **kw)
        assert calls == [], "the NumPy path ran while building the graph"
        (got,) = dask.compute(out, scheduler="threads", num_workers=2)
        # one thread each, and inside serial(): not only because Dask runs it
        assert calls == [(1, True)] * x.npartitions, calls
        want = _call(kind, x.compute(), **kw)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=0)


def test_layer_names_come_from_input_names_and_parameters() -> None:
    """The output's name hashes the input's name and the call's parameters, never the
    data: two inputs of one name give one output name (Dask's names are content
    keys), any change of input or parameter gives another."""
    import dask.array as da

    a = _rows()
    b = a[::-1].copy()
    x = da.from_array(a, chunks=(4, 10), name="issue-12-input")
    same_name = da.from_array(b, chunks=(4, 10), name="issue-12-input")
    other = da.from_array(a, chunks=(4, 10), name="issue-12-other")
    assert sx.softmax(x).name == sx.softmax(same_name).name
    assert sx.softmax(x).name == sx.softmax(x).name  # deterministic
    names = {
        sx.softmax(x).name,
        sx.softmax(other).name,
        sx.softmin(x).name,
        sx.log_softmax(x).name,
        sx.softmax(x, temperature=2.0).name,
        sx.softmax(x, temperature=3.0).name,
        sx.softmax(x, dtype=np.float32).name,
        sx.softmax(x, where=_dask(a > 0, (4, 10))).name,
        sx.softmax(x, where=_dask(a > 1, (4, 10))).name,
        sx.logsumexp(x, axis=-1, keepdims=True).name,
        sx.softmax(x, axis=(0, 1)).name,
    }
    assert len(names) == 11


BOUNDARY_CHUNKS = [((1, 10)), ((5, 10)), (((3, 9), (10,))), ((12, 3)), ((2, 4))]


@pytest.mark.parametrize("chunks", BOUNDARY_CHUNKS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_special_values_at_chunk_boundaries_equal_numpy(
    kind: str, dtype: Any, chunks: Any
) -> None:
    """The contract's special rows next to block edges (every row its own block,
    blocks of 5, 3 + 9), and the same entries split over column chunks: the
    answer of the NumPy path on the whole array."""
    a = _rows()
    # special entries at the column chunk edges (after 3 and 4 columns)
    a[0, [2, 3]] = INF
    a[1, 3] = NAN
    a[2, 4:8] = NINF
    with np.errstate(over="ignore"):
        data = a.astype(dtype)
    for axis in (-1, 0):
        got = _call(kind, _dask(data, chunks), axis=axis)
        want = _call(kind, data, axis=axis)
        assert_same(got, want, dtype)


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_calls_computed_together_keep_their_own_keys(chunking: str) -> None:
    """Several of our outputs in one graph: no two share a task key.

    Regression: fixed layer names made ``softmax(x)`` and ``softmax(0.5 * x)``
    collide, and ``dask.compute`` returned one answer for both.
    """
    import dask
    import dask.array as da

    x = _dask(_rows(), CHUNKINGS[chunking])
    w = _rows() > 0
    calls = [
        ("softmax", x, {}),
        ("softmax", 0.5 * x, {}),
        ("softmin", x, {}),
        ("log_softmax", x, {}),
        ("log_softmax", x, {"temperature": 2.0}),
        ("softmax", x, {"where": _dask(w, CHUNKINGS[chunking])}),
        ("logsumexp", x, {}),
        ("logsumexp", 0.5 * x, {}),
    ]
    outs = [_call(kind, arr, axis=-1, **kw) for kind, arr, kw in calls]
    results = dask.compute(*outs, scheduler="sync")
    for (kind, arr, kw), got in zip(calls, results, strict=True):
        np_kw = {
            k: (v.compute() if isinstance(v, da.Array) else v) for k, v in kw.items()
        }
        want = _call(kind, arr.compute(), axis=-1, **np_kw)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300, err_msg=kind)


# ===========================================================================
# The generic answer


VARIANTS = ["plain", "where", "t-float", "t-array", "where+t-array"]


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize(
    ("kind", "variant"),
    [(k, v) for k in KINDS for v in VARIANTS if k != "logsumexp" or "t-" not in v],
)
def test_equals_generic(kind: str, variant: str, chunking: str) -> None:
    data = _rows()
    x = _dask(data, CHUNKINGS[chunking])
    kw: dict[str, Any] = {}
    if "where" in variant:
        kw["where"] = _dask(_mask(data.shape), (5, 4))
    # temperatures >= 1: x / t cannot overflow on the max_float row
    if variant == "t-float":
        kw["temperature"] = 1.7
    if "t-array" in variant:
        kw["temperature"] = _dask(np.linspace(1.0, 3.0, 12)[:, None], 5)
    for axis in (-1, 0, None):
        with _no_compute():
            out = _call(kind, x, axis=axis, **kw)
        if axis == -1:  # the rows keep their chunks
            assert out.chunks[0] == x.chunks[0]
        assert_same(out, _generic(_call, kind, x, axis=axis, **kw), np.float64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes_equal_generic(kind: str, dtype: str) -> None:
    data = _rows()
    if dtype == "int":
        data = np.where(np.isfinite(data), np.clip(np.round(data), -100, 100), 0)
        data = data.astype(np.int64)
        out_dtype: Any = np.dtype(np.float64)
    elif dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        out_dtype = np.dtype(ml_dtypes.bfloat16)
        with np.errstate(over="ignore"):
            data = data.astype(out_dtype)
    else:
        out_dtype = np.dtype(dtype)
        with np.errstate(over="ignore"):
            data = data.astype(out_dtype)
    for chunks in ((4, 10), (4, 3), (5, 7)):
        x = _dask(data, chunks)
        for axis in (-1, 0):
            out = _call(kind, x, axis=axis)
            assert out.dtype == out_dtype
            assert_same(out, _generic(_call, kind, x, axis=axis), out_dtype)
    if kind != "logsumexp" and dtype == "float64":
        finite = np.where(np.abs(data) > 1e30, 0.0, data)  # no overflow in the cast
        for dt in (np.float32, np.float16):
            out = _call(kind, _dask(finite, (4, 3)), dtype=np.dtype(dt))
            assert out.dtype == np.dtype(dt)
            want = _generic(_call, kind, _dask(finite, (4, 3)), dtype=np.dtype(dt))
            assert_same(out, want, dt)


CUBE_CHUNKS = [(2, 3, 5), (1, 2, 2), (3, 6, 5), (2, 4, 3)]


@pytest.mark.parametrize("axis", [0, 1, 2, (0, 2), (1, 2), (0, 1), None], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_tuple_axes_and_chunkings(kind: str, axis: Any) -> None:
    rows = _rows()  # 12 x 10 -> 3 x 4 x 10
    cube = rows.reshape(3, 4, 10)
    w = np.random.default_rng(8).random(cube.shape) < 0.8
    for chunks in CUBE_CHUNKS:
        x = _dask(cube, chunks)
        for kw in ({}, {"where": _dask(w, (3, 2, 4))}):
            out = _call(kind, x, axis=axis, **kw)
            assert_same(out, _generic(_call, kind, x, axis=axis, **kw), np.float64)
            if kind != "logsumexp":
                assert out.chunks == x.chunks


@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_keepdims_and_sign(keepdims: bool) -> None:
    cube = _rows().reshape(3, 4, 10)
    for chunks in CUBE_CHUNKS:
        x = _dask(cube, chunks)
        for axis in (-1, (0, 2), None):
            lse, sign = sx.logsumexp(x, axis=axis, keepdims=keepdims, return_sign=True)
            glse, gsign = _generic(
                sx.logsumexp, x, axis=axis, keepdims=keepdims, return_sign=True
            )
            assert lse.shape == glse.shape
            assert lse.chunks == glse.chunks
            assert_same(lse, glse, np.float64)
            assert_same(sign, gsign, np.float64)


def test_log1p_accuracy_survives_the_combination() -> None:
    """logsumexp([0, -40]) = 4.248e-18, whichever chunk holds which term."""
    want = 4.248354255291589e-18  # log1p(exp(-40))
    for row in ([0.0, -40.0], [-40.0, 0.0], [-40.0, NINF, 0.0, NINF]):
        a = np.asarray(row)
        for chunks in (1, 2, 3):
            x = _dask(a, chunks)
            np.testing.assert_allclose(
                float(sx.logsumexp(x).compute()), want, rtol=1e-15
            )
            ls = np.asarray(sx.log_softmax(x).compute())
            np.testing.assert_allclose(ls[a == 0.0], -want, rtol=1e-15)
    # float32 input: computed in float64, rounded once
    x32 = _dask(np.asarray([0.0, -40.0, NINF], dtype=np.float32), 1)
    lse32 = sx.logsumexp(x32).compute()
    assert lse32.dtype == np.float32
    np.testing.assert_allclose(float(lse32), want, rtol=1e-7)
    # ties across chunks: 0 and 0 make log 2, the -40 still counts
    tie = _dask(np.asarray([0.0, -40.0, 0.0]), 1)
    np.testing.assert_allclose(
        float(sx.logsumexp(tie).compute()), np.log(2) + want / 2, rtol=1e-15
    )


def test_special_slices_split_over_chunks() -> None:
    """+inf counts, nothing left and NaN, each spread over several chunks."""
    a = np.array(
        [
            [INF, 1.0, NINF, INF, 2.0, INF],
            [NINF] * 6,
            [1.0, 2.0, 3.0, NAN, 4.0, 5.0],
            [1.0, NINF, NINF, NINF, NINF, 1.0],
        ]
    )
    x = _dask(a, (4, 2))
    np.testing.assert_array_equal(
        np.asarray(sx.softmax(x).compute()),
        [
            [1 / 3, 0, 0, 1 / 3, 0, 1 / 3],
            [0.0] * 6,
            [NAN] * 6,
            [0.5, 0, 0, 0, 0, 0.5],
        ],
    )
    np.testing.assert_allclose(
        np.asarray(sx.log_softmax(x).compute())[0],
        [-np.log(3), NINF, NINF, -np.log(3), NINF, -np.log(3)],
    )
    np.testing.assert_array_equal(
        np.asarray(sx.logsumexp(x, axis=1).compute())[:3], [INF, NINF, NAN]
    )
    # masked NaN in a NaN slice keeps 0 / -inf; the unmasked ones are NaN
    w = np.ones(a.shape, dtype=bool)
    w[2, [0, 5]] = False
    p = np.asarray(sx.softmax(x, where=_dask(w, (2, 3))).compute())
    np.testing.assert_array_equal(p[2], [0.0, NAN, NAN, NAN, NAN, 0.0])


def test_input_untouched_and_output_fresh() -> None:
    data = _rows()
    before = data.copy()
    for chunks in ((4, 10), (4, 3)):
        x = _dask(data, chunks)
        for kind in KINDS:
            _call(kind, x, axis=-1).compute()
            _call(kind, x, axis=0, where=_dask(_mask(data.shape), chunks)).compute()
        np.testing.assert_array_equal(data, before)


def test_combination_is_an_online_normaliser() -> None:
    """The (m, rest) merge of the reduction: neutral element, +inf counts, ties, order-free."""
    from softmax_xp._fast.dask import _merge_states

    state = np.dtype([("m", np.float64), ("rest", np.float64)])

    def summary(m: float, s: float) -> np.ndarray:
        out = np.empty((1,), dtype=state)
        out["m"], out["rest"] = m, s
        return out

    def merged(*parts: np.ndarray) -> tuple[float, float]:
        # nested as dask.array.reduction(concatenate=False) hands them over
        acc = _merge_states([list(parts[:1]), list(parts[1:])], dtype=state)
        return float(acc["m"][0]), float(acc["rest"][0])

    nothing = summary(NINF, -1.0)
    a, b = summary(2.0, 0.5), summary(0.0, 0.25)
    # S = 1.5 + 1.25 e^-2 with its leading 1 kept apart
    want = (2.0, 0.5 + 1.25 * np.exp(-2.0))
    for order in ((a, b), (b, a), (a, nothing, b), (nothing, b, a)):
        m, s = merged(*order)
        assert m == want[0]
        np.testing.assert_allclose(s, want[1], rtol=1e-15)
    assert merged(nothing, nothing) == (NINF, -1.0)
    assert merged(a, a) == (2.0, 2.0)  # two maxima: s' = 0.5 + 1.5
    # k +inf entries count k - 1; finite sides vanish beside them
    assert merged(summary(INF, 1.0), a, summary(INF, 0.0)) == (INF, 2.0)
    m, s = merged(a, summary(NAN, NAN), b)
    assert np.isnan(m)


def test_other_configurations_fall_back() -> None:
    from softmax_xp._fast import dask as fast_dask
    from softmax_xp._validation import prepare_logsumexp

    x = _dask(_rows(), (4, 3))
    b = _dask(np.linspace(0.5, 2.0, 10), 5)
    call = prepare_logsumexp(x, -1, b, None, None, None)
    assert (
        fast_dask.run("logsumexp", call, keepdims=False, return_sign=False)
        is NotImplemented
    )
    # and the public call still answers, lazily, through the generic core
    with _no_compute():
        out = sx.logsumexp(x, axis=-1, b=b)
    want = _generic(sx.logsumexp, x, axis=-1, b=b)
    assert_same(out, want, np.float64)


def test_unknown_chunk_lengths_fall_back() -> None:
    data = _rows()
    x = _dask(data, (4, 3))
    picked = x[x[:, 0] > -1e300]  # rows of unknown count
    assert any(np.isnan(n) for n in picked.chunks[0])
    keep = data[data[:, 0] > -1e300]
    with _no_compute():
        out = sx.softmax(picked, axis=-1)
    np.testing.assert_array_equal(
        np.isnan(out.compute()), np.isnan(_generic(sx.softmax, keep))
    )
    np.testing.assert_allclose(
        out.compute(), _generic(sx.softmax, keep), rtol=1e-14, atol=1e-300
    )


# ---------------------------------------------------------------------------
# zero-length chunks, and the sign before rounding

ZERO_CHUNKS = {
    # name: (shape, chunks, axis)
    "1-d": ((4,), ((2, 0, 2),), -1),
    "reduced axis": ((3, 4), ((2, 0, 1), (4,)), 0),
    "kept axis": ((3, 4), ((3,), (2, 0, 2)), 0),
    "both axes": ((3, 4), ((2, 0, 1), (2, 0, 2)), 1),
    "all axes": ((3, 4), ((0, 3), (2, 2, 0)), None),
}


@pytest.mark.parametrize("case", list(ZERO_CHUNKS))
@pytest.mark.parametrize("return_sign", [False, True])
def test_zero_length_chunks_with_weights(case: str, return_sign: bool) -> None:
    # Dask's own max and concatenations failed inside dask on such chunks;
    # the expected values are SciPy's formula in float64 NumPy
    shape, chunks, axis = ZERO_CHUNKS[case]
    rng = np.random.default_rng(40)
    x = rng.normal(0.0, 2.0, shape)
    b = rng.uniform(-1.0, 2.0, shape)
    got = sx.logsumexp(
        _dask(x, chunks), axis=axis, b=_dask(b, chunks), return_sign=return_sign
    )
    total = np.sum(b * np.exp(x), axis=axis)
    lse = got[0] if return_sign else got
    with np.errstate(invalid="ignore"):  # a negative total: NaN, as SciPy
        expected = np.log(np.abs(total)) if return_sign else np.log(total)
    np.testing.assert_allclose(lse.compute(), expected, rtol=1e-13)
    if return_sign:
        np.testing.assert_array_equal(got[1].compute(), np.sign(total))


@pytest.mark.parametrize("case", list(ZERO_CHUNKS))
@pytest.mark.parametrize("kind", KINDS)
def test_zero_length_chunks_equal_numpy(kind: str, case: str) -> None:
    shape, chunks, axis = ZERO_CHUNKS[case]
    x = np.random.default_rng(41).normal(0.0, 2.0, shape)
    kw: dict[str, Any] = {"axis": axis}
    if kind == "logsumexp":
        kw["return_sign"] = True
    got = _call(kind, _dask(x, chunks), **kw)
    expected = _call(kind, x, **kw)
    for g, e in zip(
        got if isinstance(got, tuple) else (got,),
        expected if isinstance(expected, tuple) else (expected,),
        strict=True,
    ):
        np.testing.assert_allclose(g.compute(), e, rtol=1e-13)
    # and on the generic core (SOFTMAX_XP_FORCE_GENERIC=1 runs it on Dask)
    forced = _generic(_call, kind, _dask(x, chunks), **kw)
    for g, e in zip(
        forced if isinstance(forced, tuple) else (forced,),
        expected if isinstance(expected, tuple) else (expected,),
        strict=True,
    ):
        np.testing.assert_allclose(g.compute(), e, rtol=1e-13)


@pytest.mark.parametrize(
    "chunks", [(4, 3), (2, 3), (4, 1)], ids=["one block", "split rows", "split slices"]
)
@pytest.mark.parametrize("src", [np.float32, np.float64])
def test_logsumexp_sign_before_rounding(chunks: tuple[int, int], src: Any) -> None:
    # -70000 is finite where float16 is computed; the total rounds to -inf in
    # float16, but something was left: sign 1 (docs/contract.md); a slice of -inf: 0
    x = np.full((4, 3), -70000.0, src)
    x[1] = NINF
    lse, sign = sx.logsumexp(
        _dask(x, chunks), axis=-1, dtype=np.float16, return_sign=True
    )
    assert lse.dtype == sign.dtype == np.float16
    np.testing.assert_array_equal(sign.compute(), np.asarray([1, 0, 1, 1], np.float16))
    np.testing.assert_array_equal(lse.compute(), np.full(4, NINF, np.float16))


# ---------------------------------------------------------------------------
# hunting: generated arrays and chunkings that split the reduced axes

POOL = [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 40.0, -40.0, 700.0, -745.0]
POOL += [1e300, -1e300, 1e-300, 5e-324, INF, NINF, NAN]


@st.composite
def _generated(draw: Any) -> tuple[str, np.ndarray, Any, Any, dict[str, Any]]:
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    nd = len(shape)
    size = int(np.prod(shape))
    values = np.asarray(
        draw(st.lists(st.sampled_from(POOL), min_size=size, max_size=size))
    ).reshape(shape)
    if draw(st.booleans()):  # a whole slice of one special value
        values[draw(st.integers(0, shape[0] - 1))] = draw(
            st.sampled_from([INF, NINF, NAN])
        )
    dname = draw(st.sampled_from(["float16", "float32", "float64", "int32"]))
    if dname == "int32":
        x = np.clip(np.nan_to_num(values), -50, 50).astype(np.int32)
    else:
        with np.errstate(over="ignore"):
            x = values.astype(dname)
    chunks = []
    for n in shape:  # random splits, now and then a zero-length chunk
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
        chunks.append(tuple(np.diff([0, *cuts, n]).tolist()))
    kind = draw(st.sampled_from(KINDS))
    axis_kind = draw(st.sampled_from(["int", "tuple", "None"]))
    if axis_kind == "None":
        axis: Any = None
    elif axis_kind == "int":
        axis = draw(st.integers(-nd, nd - 1))
    else:
        axis = tuple(draw(st.permutations(range(nd)))[: draw(st.integers(1, nd))])
    kw: dict[str, Any] = {}
    if draw(st.booleans()):
        kw["where"] = np.asarray(
            draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=bool
        ).reshape(shape)
    if kind == "logsumexp":
        kw["keepdims"] = draw(st.booleans())
        kw["return_sign"] = draw(st.booleans())
    elif draw(st.booleans()):
        kw["temperature"] = draw(st.sampled_from([0.25, 3.0]))
    if draw(st.booleans()):
        kw["dtype"] = np.dtype(draw(st.sampled_from(["float16", "float32", "float64"])))
    return kind, x, tuple(chunks), axis, kw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_generated())
def test_generated_cases_equal_generic(case: Any) -> None:
    kind, x, chunks, axis, kw = case
    note(f"{kind}(x={x!r}, chunks={chunks}, axis={axis!r}, {kw!r})")
    if "where" in kw:
        kw = {**kw, "where": _dask(kw["where"], chunks)}
    fast = _call(kind, _dask(x, chunks), axis=axis, **kw)
    with warnings.catch_warnings():
        # the generic core's narrowing cast warns on overflow (reported in issue 10)
        warnings.simplefilter("ignore", RuntimeWarning)
        generic = _generic(_call, kind, _dask(x, chunks), axis=axis, **kw)
        pairs = list(
            zip(fast, generic, strict=True)
            if isinstance(fast, tuple)
            else [(fast, generic)]
        )
        expected = [np.asarray(g.compute()) for _, g in pairs]
    for (f, _), e in zip(pairs, expected, strict=True):
        assert_same(f, e, e.dtype)
