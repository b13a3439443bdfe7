"""How a time is taken: warm up, calibrate a loop count, repeat round-robin.

Each candidate is a zero-argument callable that does one complete call,
synchronisation included (``block_until_ready``, ``torch.cuda.synchronize``,
Dask's ``compute``), so the clock stops only when the result exists.

- Warm-up: one call outside the clock (it compiles JAX functions, fills
  caches and allocator pools, imports lazily loaded modules).
- Calibration (as :func:`timeit.Timer.autorange`, but predictive): the loop
  count ``number`` grows until one batch of ``number`` calls lasts at least
  ``min_time``; a call slower than ``min_time`` runs once per batch. That
  last batch is a valid timing already and counts as the first repeat.
- Repeats: every candidate of one input runs one batch per round, round after
  round (round-robin), so that a burst of load from another process on a
  shared machine hits all of them alike instead of one. A candidate whose
  batches have used up ``budget`` seconds stops once it has ``min_repeat``
  repeats (slow calls: the 16M-element float64 cases, the generic path).
- The per-call time of a batch is its duration divided by ``number``; the
  reported time is the **median over the repeats** (the minimum is kept too).
- The garbage collector is off inside a batch, as in :mod:`timeit`.
- GPU candidates may instead queue their calls and synchronise once per batch
  (``sync``, inside the clock): the time per call is then the device's time
  per call, or the launch cost where the kernels are shorter than a launch,
  without a host round trip per call.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Timing", "batch", "calibrate", "round_robin"]

Call = Callable[[], Any]


@dataclass
class Timing:
    """The loop count and the seconds per call of each repeat."""

    number: int = 0
    times: list[float] = field(default_factory=list)
    sync: Call | None = None  # called once at the end of each batch, timed

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def spent(self) -> float:
        """Seconds spent in the timed batches so far."""
        return sum(self.times) * self.number


def batch(fn: Call, number: int, sync: Call | None = None) -> float:
    """Seconds taken by ``number`` consecutive calls of ``fn`` (then ``sync()``)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in itertools.repeat(None, number):
            fn()
        if sync is not None:
            sync()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def calibrate(
    fn: Call, min_time: float, max_number: int = 10_000_000, sync: Call | None = None
) -> Timing:
    """The smallest loop count (roughly) whose batch lasts ``min_time``.

    Returns a :class:`Timing` with that count and that batch as its first
    repeat (and ``sync``, which every later batch of it calls too).
    """
    number = 1
    while True:
        elapsed = batch(fn, number, sync)
        if elapsed >= min_time or number >= max_number:
            return Timing(number, [elapsed / number], sync)
        # aim 20 % past the goal; grow at most 100x a step (clock resolution)
        guess = int(number * 1.2 * min_time / max(elapsed, 1e-9)) + 1
        number = min(max_number, 100 * number, max(2 * number, guess))


def round_robin(
    timed: Sequence[tuple[Call, Timing]],
    repeat: int,
    budget: float,
    min_repeat: int = 3,
) -> None:
    """Add batches round-robin until each candidate has ``repeat`` times."""
    for _ in range(repeat):
        for fn, timing in timed:
            done = len(timing.times)
            if done >= repeat or (done >= min_repeat and timing.spent >= budget):
                continue
            elapsed = batch(fn, timing.number, timing.sync)
            timing.times.append(elapsed / timing.number)
