"""The NumPy fast path on several threads (``softmax_xp._fast._parallel``).

The promise: a call computed by the pool is bitwise the call computed on one
thread (each unit of work is computed the same way, whichever thread takes
it), for every layout, dtype, option and thread count, uneven splits
included. The tests force the pool onto small arrays (``threaded``: tiny
slabs, no size threshold, 8 CPUs pretended) so that every layout has many
units. Also tested: how many threads a call may use (affinity, the
environment variable, ``num_threads``, ``serial``, threadpoolctl's BLAS limit,
the pool's own threads, Dask's worker threads), errors in a helper, calls from
many threads at once, a pool thread that calls softmax, and a forked child.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import pickle
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from conftest import needs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import softmax_xp as sx
from softmax_xp import _fast as fast
from softmax_xp._fast import _parallel
from softmax_xp._fast import numpy as fast_numpy

pytestmark = needs("numpy")


@pytest.fixture(autouse=True)
def _fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # the pool belongs to the NumPy fast path: on it even where the session
    # turns the fast paths off (tests-generic, SOFTMAX_XP_FORCE_GENERIC=1),
    # in the threads a test starts too (they take the switch's default)
    monkeypatch.setattr(
        fast, "_FORCED", contextvars.ContextVar("fast_path_in_tests", default=False)
    )


NAN, INF = math.nan, math.inf
KINDS = ("softmax", "log_softmax", "softmin", "logsumexp")
CPUS = 8


def _pretend_cpus(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """``n`` CPUs, no environment cap, no BLAS limit (BLAS's default is the real count)."""
    monkeypatch.setattr(_parallel, "_cpus", lambda: n)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    monkeypatch.delitem(sys.modules, "threadpoolctl", raising=False)


@pytest.fixture
def threaded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """The pool on small arrays: tiny slabs, no threshold, 8 CPUs; records each split.

    Yields the ``(units, threads)`` of every call handed to ``_parallel.run``.
    """
    monkeypatch.setattr(fast_numpy, "SLAB_BYTES", 2048)
    monkeypatch.setattr(fast_numpy, "LONG_INNER", 16)
    monkeypatch.setattr(fast_numpy, "SMALL", 64)
    monkeypatch.setattr(fast_numpy, "PARALLEL_BYTES", 0)
    _pretend_cpus(monkeypatch, CPUS)
    pool = _parallel._STATE.pool
    monkeypatch.setattr(_parallel._STATE, "pool", None)  # a pool of CPUS - 1 helpers
    calls: list[tuple[int, int]] = []
    run = _parallel.run

    def spy(open_thread: Any, unit: Any, units: int, threads: int) -> None:
        calls.append((units, threads))
        run(open_thread, unit, units, threads)

    monkeypatch.setattr(_parallel, "run", spy)
    yield calls
    made = _parallel._STATE.pool
    if made is not None and made is not pool:
        made.shutdown(wait=True)


def _call(kind: str, x: Any, axis: Any, threads: int, **kw: Any) -> Any:
    with sx.num_threads(threads):
        if kind == "logsumexp":
            return sx.logsumexp(x, axis=axis, **kw)
        return getattr(sx, kind)(x, axis, **kw)


def _same_bits(a: Any, b: Any) -> None:
    if isinstance(a, tuple):
        assert isinstance(b, tuple)
        for u, v in zip(a, b, strict=True):
            _same_bits(u, v)
        return
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    # bitwise: compare the bytes (NaN payloads and signed zeros included)
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _data(shape: tuple[int, ...], dtype: Any, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 5.0, size=shape)
    flat = x.reshape(-1)
    if flat.size > 10:  # special values in a few slices (the slab redone as a block)
        picks = rng.choice(flat.size, size=4, replace=False)
        flat[picks] = [NAN, INF, -INF, 3e4]  # large, and float16 holds it
    kind = np.dtype(dtype).kind
    if kind == "b":
        return x > 0
    if kind in "iu":
        return np.nan_to_num(x, posinf=9, neginf=-9).astype(dtype)
    return x.astype(dtype)


LAYOUTS = {
    # name: (shape, axis) -- each a different branch of _sweep, with uneven splits
    "rows": ((257, 100), -1),  # slabs of whole rows; the last one short
    "short rows": ((1001, 7), -1),
    "blas blocks": ((37, 512), -1),  # rows summed by BLAS in blocks of 128
    "long rows": ((7, 1500), -1),  # each row a unit, in chunks
    "one long row": ((5000,), 0),
    "axis 0": ((300, 45), 0),  # column blocks of 16: 3 per outer index
    "middle": ((6, 50, 21), 1),
    "boxes": ((250, 6, 7), 1),  # (o, N, i) boxes of several o
    "trailing pair": ((33, 8, 30), (1, 2)),
    "leading pair": ((8, 30, 33), (0, 1)),
    "all": ((40, 70), None),
}


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("kind", KINDS)
def test_threads_give_the_serial_bits(kind: str, layout: str) -> None:
    shape, axis = LAYOUTS[layout]
    for dtype in (np.float32, np.float64):
        x = _data(shape, dtype, seed=len(layout))
        serial = _call(kind, x, axis, 1)
        for threads in (2, 3, 5, CPUS):
            _same_bits(_call(kind, x, axis, threads), serial)


@pytest.mark.parametrize("kind", KINDS)
def test_the_pool_runs_and_splits_unevenly(
    kind: str, threaded: list[tuple[int, int]]
) -> None:
    x = _data((257, 100), np.float32, seed=1)
    _call(kind, x, -1, 3)
    units, threads = threaded[-1]
    assert threads == 3
    assert units > threads  # 257 rows: the last slab is short


OPTIONS: dict[str, dict[str, Any]] = {
    "mask": {"where": np.random.default_rng(2).random((257, 100)) < 0.7},
    "row mask": {"where": np.random.default_rng(3).random(100) < 0.5},
    "temperature": {"temperature": 0.3},
    "array temperature": {"temperature": np.linspace(0.5, 2.0, 257)[:, None]},
    "dtype float32": {"dtype": np.float32},
    "dtype float16": {"dtype": np.float16},
}


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin"])
def test_options_give_the_serial_bits(kind: str, option: str) -> None:
    x = _data((257, 100), np.float64, seed=4)
    kw = OPTIONS[option]
    serial = _call(kind, x, -1, 1, **kw)
    for threads in (2, 4):
        _same_bits(_call(kind, x, -1, threads, **kw), serial)


@pytest.mark.usefixtures("threaded")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int16", "bool"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes_give_the_serial_bits(kind: str, dtype: str) -> None:
    for shape, axis in [((300, 45), -1), ((300, 45), 0), ((4, 3000), -1)]:
        x = _data(shape, dtype, seed=5)
        _same_bits(_call(kind, x, axis, 3), _call(kind, x, axis, 1))


@pytest.mark.usefixtures("threaded")
def test_logsumexp_options_give_the_serial_bits() -> None:
    x = _data((300, 45), np.float32, seed=6)
    for axis in (0, -1, None, (0, 1)):
        for kw in ({"keepdims": True}, {"return_sign": True}, {"dtype": np.float16}):
            serial = _call("logsumexp", x, axis, 1, **kw)
            _same_bits(_call("logsumexp", x, axis, 4, **kw), serial)


@st.composite
def _generated(draw: Any) -> tuple[str, np.ndarray, Any, int, dict[str, Any]]:
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 60), min_size=nd, max_size=nd)))
    dtype = draw(st.sampled_from(["float16", "float32", "float64", "int32"]))
    x = _data(shape, dtype, seed=draw(st.integers(0, 2**16)))
    layout = draw(st.sampled_from(["C", "fortran", "negative", "strided"]))
    if layout == "fortran":
        x = np.asfortranarray(x)
    elif layout == "negative":
        x = x[(slice(None, None, -1),) * nd]
    elif layout == "strided":
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    kind = draw(st.sampled_from(KINDS))
    axis: Any = draw(
        st.one_of(
            st.integers(-nd, nd - 1),
            st.none(),
            st.permutations(range(nd))
            .map(tuple)
            .flatmap(lambda p: st.integers(1, len(p)).map(lambda k: tuple(p[:k]))),
        )
    )
    kw: dict[str, Any] = {}
    if kind != "logsumexp" and draw(st.booleans()):
        kw["where"] = np.random.default_rng(0).random(shape) < 0.8
    return kind, x, axis, draw(st.integers(2, 7)), kw


@pytest.mark.usefixtures("threaded")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_generated())
def test_generated_cases_give_the_serial_bits(
    case: tuple[str, np.ndarray, Any, int, dict[str, Any]],
) -> None:
    kind, x, axis, threads, kw = case
    note(f"{kind}(shape={x.shape}, strides={x.strides}, axis={axis!r}, {threads=})")
    _same_bits(_call(kind, x, axis, threads, **kw), _call(kind, x, axis, 1, **kw))


def test_default_sizes_split_large_calls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cpus(monkeypatch, 2)
    asked: list[int] = []
    real = _parallel.max_threads

    def spy() -> int:
        asked.append(1)
        return real()

    monkeypatch.setattr(_parallel, "max_threads", spy)
    sx.softmax(np.ones((64, 1024), np.float32))  # 256 KiB: serial, not even asked
    assert not asked
    x = _data((1024, 1024), np.float32, seed=7)  # 4 MiB
    two = sx.softmax(x)
    assert asked
    _same_bits(two, _call("softmax", x, -1, 1))


# --------------------------------------------------------------------------
# how many threads


def test_max_threads_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cpus(monkeypatch, 6)
    assert _parallel.max_threads() == 6
    for value, expect in [("3", 3), ("64", 6), ("1", 1), ("0", 6), ("x", 6), ("", 6)]:
        monkeypatch.setenv(_parallel.ENV, value)  # read on every call
        assert _parallel.max_threads() == expect, value
    monkeypatch.setenv(_parallel.ENV, "4")
    with sx.num_threads(5):
        assert _parallel.max_threads() == 4
        with sx.num_threads(2):
            assert _parallel.max_threads() == 2
        with _parallel.serial():
            assert _parallel.max_threads() == 1
        assert _parallel.max_threads() == 4
    for bad in (0, -1):
        with (
            pytest.raises(ValueError, match=rf"num_threads: n={bad}"),
            sx.num_threads(bad),
        ):
            pass
    for wrong in (1.5, True, "2", None):
        with pytest.raises(TypeError, match="num_threads: n="), sx.num_threads(wrong):  # type: ignore[arg-type]
            pass


def test_affinity_counts() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this OS")
    assert _parallel._cpus() == len(os.sched_getaffinity(0))


def test_num_threads_is_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cpus(monkeypatch, 4)
    seen: list[int] = []
    with sx.num_threads(1):
        t = threading.Thread(target=lambda: seen.append(_parallel.max_threads()))
        t.start()
        t.join()
    assert seen == [4]


def test_pool_threads_stay_serial(threaded: list[tuple[int, int]]) -> None:
    x = _data((257, 100), np.float32, seed=8)
    serial = _call("softmax", x, -1, 1)

    def inside() -> tuple[int, Any]:
        return _parallel.max_threads(), sx.softmax(x)

    n, res = _parallel._pool().submit(inside).result(timeout=60)
    assert n == 1
    _same_bits(res, serial)


def test_threadpoolctl_blas_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(_parallel, "_cpus", lambda: 4)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    if not threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers:
        pytest.skip("threadpoolctl finds no BLAS here")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert _parallel.max_threads() == 1
    with threadpoolctl.threadpool_limits(limits=3, user_api="blas"):
        assert _parallel.max_threads() == 3


def test_blas_limit_without_threadpoolctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "_cpus", lambda: 4)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    monkeypatch.delitem(sys.modules, "threadpoolctl", raising=False)
    monkeypatch.setattr(_parallel, "_blas_limit", lambda: pytest.fail("asked"))
    assert _parallel.max_threads() == 4


class _Lib:
    def __init__(self, n: Any) -> None:
        self.n = n

    def get_num_threads(self) -> Any:
        return self.n


def test_blas_limit_takes_the_smallest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "_cpus", lambda: 8)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "threadpoolctl", types.ModuleType("threadpoolctl"))
    monkeypatch.setattr(_parallel._STATE, "blas_libs", [_Lib(6), _Lib(None), _Lib(3)])
    assert _parallel.max_threads() == 3
    monkeypatch.setattr(_parallel._STATE, "blas_libs", [_Lib(None)])
    assert _parallel.max_threads() == 8


def test_a_fake_distributed_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cpus(monkeypatch, 4)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    module = types.ModuleType("distributed.threadpoolexecutor")
    module.thread_state = threading.local()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "distributed.threadpoolexecutor", module)
    assert _parallel.max_threads() == 4
    seen: list[int] = []

    def worker() -> None:
        module.thread_state.executor = object()  # type: ignore[attr-defined]
        seen.append(_parallel.max_threads())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [1]
    assert _parallel.max_threads() == 4  # this thread is no worker


@needs("dask")
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_dask_schedulers(scheduler: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dask = pytest.importorskip("dask")
    _pretend_cpus(monkeypatch, 4)
    monkeypatch.delenv(_parallel.ENV, raising=False)
    tasks = [dask.delayed(_parallel.max_threads)() for _ in range(4)]
    seen = dask.compute(*tasks, scheduler=scheduler, num_workers=2)
    assert set(seen) == ({1} if scheduler == "threads" else {4})


@needs("dask")
def test_distributed_worker_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    _pretend_cpus(monkeypatch, 4)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        seen = client.gather(client.map(lambda _: _parallel.max_threads(), range(4)))
    assert set(seen) == {1}


# --------------------------------------------------------------------------
# the pool itself


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_helpers_take_units() -> None:
    """With a helper free, two threads take units (the first unit waits for a second thread)."""
    both = threading.Barrier(2, timeout=30)
    who: dict[int, int] = {}

    def unit(_: None, k: int) -> None:
        if k == 0:
            both.wait()
        who[k] = threading.get_ident()
        if k == 1:
            both.wait()

    _parallel.run(_nothing, unit, 6, 2)
    assert sorted(who) == list(range(6))
    assert len(set(who.values())) == 2


def test_an_error_in_a_helper_is_raised() -> None:
    done: list[int] = []

    def unit(_: None, k: int) -> None:
        if threading.current_thread() is not threading.main_thread() or k == 5:
            msg = f"unit {k}"
            raise KeyError(msg)
        done.append(k)

    with pytest.raises(KeyError, match="unit"):
        _parallel.run(_nothing, unit, 50, 3)
    assert len(done) < 50  # nothing more was handed out


def test_an_error_entering_a_thread_is_raised() -> None:
    @contextlib.contextmanager
    def broken() -> Iterator[None]:
        msg = "no buffers"
        raise MemoryError(msg)
        yield

    with pytest.raises(MemoryError, match="no buffers"):
        _parallel.run(broken, lambda _, k: None, 4, 2)


def test_the_caller_does_not_wait_for_a_helper_that_took_nothing() -> None:
    """A helper stuck before taking a unit (a busy pool, a loaded machine) delays nothing."""
    pool = _parallel._pool()
    blocker = threading.Event()
    stuck = [pool.submit(blocker.wait, 60) for _ in range(pool._max_workers)]
    try:
        seen: list[int] = []
        _parallel.run(_nothing, lambda _, k: seen.append(k), 8, 4)
        assert sorted(seen) == list(range(8))  # all on this thread, at once
    finally:
        blocker.set()
        for f in stuck:
            f.result(timeout=60)


def test_many_user_threads_at_once(threaded: list[tuple[int, int]]) -> None:
    cases = [
        (kind, _data(shape, np.float32, seed=9), axis)
        for kind in KINDS
        for shape, axis in (LAYOUTS["rows"], LAYOUTS["axis 0"], LAYOUTS["long rows"])
    ]
    serial = [_call(kind, x, axis, 1) for kind, x, axis in cases]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def work(k: int) -> None:
        try:
            start.wait(timeout=30)
            for j in range(len(cases)):
                i = (j + k) % len(cases)
                kind, x, axis = cases[i]
                _same_bits(_call(kind, x, axis, 4), serial[i])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    users = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in users:
        t.start()
    for t in users:
        t.join(timeout=300)
        assert not t.is_alive(), "a call never finished"
    assert not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this OS")
def test_a_forked_child_makes_its_own_pool(threaded: list[tuple[int, int]]) -> None:
    x = _data((257, 100), np.float32, seed=10)
    serial = _call("log_softmax", x, -1, 1)
    _call("log_softmax", x, -1, 4)  # the parent's pool exists and has run
    assert _parallel._STATE.pool is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, only a result down the pipe
        try:
            ok = _parallel._STATE.pool is None
            res = _call("log_softmax", x, -1, 4)
            payload = pickle.dumps((ok, res))
        except BaseException as err:  # noqa: BLE001 - sent to the parent
            payload = pickle.dumps((False, repr(err)))
        with os.fdopen(write, "wb") as f:
            f.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        forgotten, res = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert forgotten
    _same_bits(res, serial)
