"""How many threads a CPU kernel may use for one call (the NumPy fast path's pool).

The interface (filled in by the NumPy fast path's work, issue 12):

- :func:`max_threads`: the threads a call may use here and now: the process's
  CPU affinity, capped by ``SOFTMAX_XP_NUM_THREADS`` and by :func:`num_threads`;
  1 inside :func:`serial` and inside a Dask worker thread.
- :func:`num_threads`: a context manager capping the threads of the calls in
  its block (public as ``softmax_xp.num_threads``).
- :func:`serial`: a context manager for the Dask path's per-block work (Dask
  supplies the parallelism there).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

__all__ = ["max_threads", "num_threads", "serial"]

_CAP: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "softmax_xp_num_threads", default=None
)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Let the calls in this block use at most ``n`` threads (this thread or task only)."""
    if type(n) is not int or n < 1:
        msg = f"num_threads: n={n!r} must be a positive int"
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
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, n if cap is None else min(n, cap))
