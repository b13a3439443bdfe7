"""How many threads a CPU kernel may use for one call, and the pool that runs them.

The NumPy fast path splits a large call into units of work (slabs, long rows)
and hands them to this module: the calling thread and up to
``max_threads() - 1`` helper threads of one persistent pool take units one at
a time until none is left. Each unit is computed exactly as the serial loop
computes it (same bounds, same operations), so the result is bitwise that of
one thread; only the thread that computes a unit changes.

- :func:`max_threads`: the threads a call may use here and now: the process's
  CPU affinity, capped by ``SOFTMAX_XP_NUM_THREADS`` (read on every call, so a
  change at run time counts), by :func:`num_threads`, and by a user's limit on
  the BLAS threads (``threadpoolctl``, see :func:`_blas_limit`); 1 inside
  :func:`serial`, inside this pool's own threads and inside a Dask worker
  thread (:func:`_in_dask_task`), where Dask supplies the parallelism.
- :func:`num_threads`: a context manager capping the threads of the calls in
  its block (public as ``softmax_xp.num_threads``).
- :func:`serial`: a context manager for the Dask path's per-block work.
- :func:`run`: hand ``units`` units of work to the calling thread and helpers.

No deadlock and no waiting on a busy pool: the calling thread works through
the units itself and then waits only for the units other threads are
computing, never for a helper that took none (helpers not started are
cancelled), so a call from many user threads at once (or from a
thread of this pool) finishes even when every helper is busy elsewhere. The
pool is created on first use, sized to the CPUs the process may run on, and
forgotten in a forked child (its threads do not survive a fork).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["max_threads", "num_threads", "run", "serial"]

ENV = "SOFTMAX_XP_NUM_THREADS"

_CAP: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "softmax_xp_num_threads", default=None
)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Let the calls in this block use at most ``n`` threads (this thread or task only).

    The NumPy path splits inputs of 4 MiB and more over a pool of threads (the
    result is bitwise that of one thread). By default it uses the CPUs the
    process may run on, capped by the environment variable
    ``SOFTMAX_XP_NUM_THREADS`` and, where ``threadpoolctl`` is imported, by
    the BLAS thread limit; it runs serially inside Dask's workers. The other
    backends keep their own threading (``torch.set_num_threads``, XLA).

    Parameters
    ----------
    n : int
        At least 1; ``num_threads(1)`` runs every call on the calling thread.

    Raises
    ------
    TypeError
        If ``n`` is not an int.
    ValueError
        If ``n`` is less than 1.

    Examples
    --------
    >>> import numpy as np
    >>> import softmax_xp as sx
    >>> with sx.num_threads(1):
    ...     sx.softmax(np.zeros(2))
    array([0.5, 0.5])
    """
    if type(n) is not int:
        msg = f"num_threads: n={n!r} must be an int"
        raise TypeError(msg)
    if n < 1:
        msg = f"num_threads: n={n!r} must be at least 1"
        raise ValueError(msg)
    token = _CAP.set(n)
    try:
        yield
    finally:
        _CAP.reset(token)


@contextlib.contextmanager
def serial() -> Iterator[None]:
    """Run the calls in this block on the calling thread only."""
    with num_threads(1):
        yield


def max_threads() -> int:
    """The threads a call may use here and now (at least 1)."""
    cap = _CAP.get()
    if cap == 1:
        return 1
    n = _cpus()
    env = _env_cap()
    if env is not None:
        n = min(n, env)
    if cap is not None:
        n = min(n, cap)
    if n > 1 and (_POOL_THREAD.flag or _in_dask_task()):
        return 1
    if n > 1 and "threadpoolctl" in sys.modules:
        n = min(n, _blas_limit())
    return max(1, n)


def _cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _env_cap() -> int | None:
    """``SOFTMAX_XP_NUM_THREADS`` as a positive int; unset, empty or invalid: ``None``."""
    value = os.environ.get(ENV)
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


# --------------------------------------------------------------------------
# where not to start threads


class _PoolThread(threading.local):
    flag = False  # True in this module's own pool threads


_POOL_THREAD = _PoolThread()


def _in_dask_task() -> bool:
    """Whether this thread runs a task of a Dask scheduler that runs tasks in parallel.

    Cheap, and without importing Dask: only modules already imported are
    looked at. A ``distributed`` worker's threads carry their executor in
    ``distributed.threadpoolexecutor.thread_state``. The local schedulers
    (threads, processes) run ``dask.local.batch_execute_tasks`` in their
    workers; the synchronous scheduler runs it too, but from inside its own
    ``get_async`` loop on the calling thread, and stays parallel.
    """
    dist = sys.modules.get("distributed.threadpoolexecutor")
    if dist is not None and getattr(dist.thread_state, "executor", None) is not None:
        return True
    local = sys.modules.get("dask.local")
    if local is None:
        return False
    task, loop = local.batch_execute_tasks.__code__, local.get_async.__code__
    frame: Any = sys._getframe(1)
    inside = False
    while frame is not None:
        code = frame.f_code
        if code is task:
            inside = True
        elif code is loop:
            return False  # the synchronous scheduler, on the calling thread
        frame = frame.f_back
    return inside


def _blas_limit() -> int:
    """The fewest threads a user let the BLAS libraries use (``threadpoolctl``).

    Asked only when ``threadpoolctl`` is already imported (a user who limits
    threads with it has imported it): its ``threadpool_limits`` sets the
    libraries' own thread counts, which are read here through the
    controllers it found (found once, a few ms; each read is one C call).
    Only BLAS is asked: the row sums of the NumPy kernel run in BLAS, and a
    limit on it is a limit on this kernel's threads. A BLAS left at its
    default (all CPUs) caps nothing.
    """
    libs = _STATE.blas_libs
    if libs is None:
        threadpoolctl: Any = sys.modules["threadpoolctl"]
        try:
            found = threadpoolctl.ThreadpoolController().select(user_api="blas")
            libs = list(found.lib_controllers)
        except Exception:  # noqa: BLE001 - an old or broken threadpoolctl limits nothing
            libs = []
        _STATE.blas_libs = libs
    limits = [lib.get_num_threads() for lib in libs]
    known = [n for n in limits if isinstance(n, int) and n >= 1]
    return min(known, default=sys.maxsize)


class _State:
    """What this module makes once: the pool, its lock, the BLAS controllers."""

    pool: ThreadPoolExecutor | None = None
    lock = threading.Lock()
    blas_libs: list[Any] | None = None


_STATE = _State()


# --------------------------------------------------------------------------
# the pool


class _Claims:
    """The unit numbers ``0 .. n - 1``, each handed to one thread, first come first served.

    Counts the units handed out and not yet finished, so that the calling
    thread waits for units in flight only, never for a helper that has taken
    nothing (one the OS has not scheduled yet, on a loaded machine).
    """

    __slots__ = ("_cond", "_n", "_next", "_pending", "error")

    def __init__(self, n: int) -> None:
        self._n, self._next, self._pending = n, 0, 0
        self._cond = threading.Condition(threading.Lock())
        self.error: BaseException | None = None

    def take(self) -> int | None:
        """The next unit number, or ``None`` when all are handed out."""
        with self._cond:
            k = self._next
            if k >= self._n:
                return None
            self._next, self._pending = k + 1, self._pending + 1
            return k

    def finish(
        self, error: BaseException | None = None, *, in_flight: bool = True
    ) -> None:
        """A unit is done (or failed: then nothing more is handed out)."""
        with self._cond:
            if in_flight:
                self._pending -= 1
            if error is not None:
                self._next = self._n
                if self.error is None:
                    self.error = error
            if self._pending == 0 and self._next >= self._n:
                self._cond.notify_all()

    def wait(self) -> None:
        """Until every unit handed out is finished."""
        with self._cond:
            while self._pending or self._next < self._n:
                self._cond.wait()


def _mark() -> None:
    _POOL_THREAD.flag = True


def _pool() -> ThreadPoolExecutor:
    pool = _STATE.pool
    if pool is None:
        with _STATE.lock:
            if _STATE.pool is None:
                _STATE.pool = ThreadPoolExecutor(
                    max(1, _cpus() - 1),
                    thread_name_prefix="softmax-xp",
                    initializer=_mark,
                )
            pool = _STATE.pool
    return pool


def _forget_pool() -> None:
    """In a forked child: the parent's pool threads are gone."""
    _STATE.pool, _STATE.lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run(
    open_thread: Callable[[], contextlib.AbstractContextManager[Any]],
    unit: Callable[[Any, int], None],
    units: int,
    threads: int,
) -> None:
    """``unit(state, k)`` for ``k`` in ``range(units)``, on this thread and up to ``threads - 1`` helpers.

    Each thread enters ``open_thread()`` once (its scratch buffers and ufunc
    settings: ``state``) and computes the units it takes. An error in any
    thread stops the handing out and is raised here.
    """
    claims = _Claims(units)
    helpers = min(threads, units) - 1
    pool = _pool() if helpers > 0 else None
    futures = (
        [pool.submit(_drive, claims, open_thread, unit) for _ in range(helpers)]
        if pool
        else []
    )
    _drive(claims, open_thread, unit)
    for f in futures:
        f.cancel()  # not started: nothing is left for it
    claims.wait()
    if claims.error is not None:
        raise claims.error


def _drive(
    claims: _Claims,
    open_thread: Callable[[], contextlib.AbstractContextManager[Any]],
    unit: Callable[[Any, int], None],
) -> None:
    """Take units until none is left; errors go to ``claims``."""
    try:
        with open_thread() as state:
            while (k := claims.take()) is not None:
                try:
                    unit(state, k)
                except BaseException as err:  # noqa: BLE001 - raised by run()
                    claims.finish(err)
                    return
                claims.finish()
    except BaseException as err:  # noqa: BLE001 - entering or leaving open_thread
        claims.finish(err, in_flight=False)
