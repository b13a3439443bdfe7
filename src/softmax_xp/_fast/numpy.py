"""NumPy: a cache-blocked kernel for finite slices that writes the output once.

The generic core makes about a dozen full-size temporaries; here the work is
split into slabs of half a MiB that stay in the CPU cache while the maximum,
the shift, ``exp``, the sum and the scaling run over them, each a ufunc
writing into the output or a slab-sized buffer (``out=``). Nothing full-size
is allocated but the output. Timings behind the choices below are in
docs/performance.md.

Layout. The input is viewed, without a copy, as ``(O, N, I)``: the reduced
axes merged into ``N``, the other axes into an outer ``O`` and an inner ``I``
group, in the input's own memory order (axes with negative strides flipped
first; the output is laid out to match). With ``I == 1`` the slabs are blocks
of whole rows. Otherwise (``axis=0`` of a C-ordered array, Fortran order)
the slices are columns: small problems take whole ``(o, N, I)`` boxes, larger
ones blocks of full-width rows, so that the reductions combine contiguous
rows elementwise (narrow boxes of full columns would run NumPy's inner loops
over a few elements each). A slice too long for one slab (64 x 1,000,000;
1-D; those columns) is done in three sweeps: its maximum, then the shifted
``exp`` and its sum chunk by chunk (kept in the output where it can hold
them), then the scaling. Layouts that do not merge (a kept axis between
reduced ones in memory) go to the generic core.

Special slices (maximum NaN, ``+inf``, or nothing left) are rare; their
rules live in the shared kernels (``_kernels``, docs/contract.md), not here.
Each slab first runs the finite formula unchecked, under
``np.errstate(invalid="raise")``: a slice whose maximum is ``+-inf`` makes
``inf - inf`` in the shift, and the slab is done again as a block of one
chunk (below). A NaN slice raises nothing and needs nothing: the finite
formula fills it with NaN. Masked slabs, whose masked entries must stay 0 /
``-inf``, check their maxima. A block (long slices, or such a slab) checks
its maxima and, where one is not finite, takes ``z`` from the shared
``shift`` (piece by piece, so that its temporaries stay small), divides by
``1 + s'`` as the generic core does, and finishes with the shared ``poison``
and ``lse_from_state``.

The finite hot loop:

- the row maximum comes from ``argmax`` plus a gather for rows up to 1024:
  NumPy's ``argmax`` loops over rows without the ufunc machinery; its index
  also marks the one maximum that the log1p form keeps out of the sum.
- contiguous rows are summed by BLAS (``dot`` with ones) in blocks of 128,
  whose sums are summed again: at that length one BLAS dot is as accurate as
  NumPy's 8-way unrolled block sum, so this is NumPy's pairwise sum in two
  levels, at a fraction of its cost (a plain BLAS sum of a long row is less
  accurate than the contract's bounds allow).
- columns (axis 1 of ``(o, N, I)`` slabs) and the chunk sums of a long slice
  are summed pairwise by halving (``_column_sum``, ``_fold``): NumPy adds a
  non-contiguous axis row after row, an error growing like its length.
- the ufunc buffer is set to a row's length (when at least 128): with the
  default 8192 elements NumPy copies a broadcast ``(rows, 1)`` operand through
  its buffers, which makes ``x - m`` and the division several times slower
  than the same ufunc on a scalar. For shorter rows smaller buffers cost more.
- log1p form: with the maximum's ``exp`` set to 0 before the sum, the sum is
  ``s'`` itself (tied maxima add their 1 each). Where no ``argmax`` is at
  hand, ``s' = S - 1`` is exact enough once ``S >= 2``, and the slices with
  ``S < 2`` (they have one maximum, the only ``exp`` equal to 1) are summed
  again without it.
- a small call (up to 16K elements, trailing axes, C order, nothing to mask
  or cast) skips the slab machinery, and softmax / log_softmax even skip
  ``np.errstate`` once the maxima are known to be moderate; the plainest of
  these (``_small``: float32/64, no option) is recognised first, before any
  other check, and its ufuncs get ``out`` by position (a keyword costs about
  a microsecond per ufunc call at 8 x 128).
- float16 / bfloat16 slabs are copied into float32 first and rounded once,
  by a copy, at the end: NumPy's half-precision loops and its float32 ->
  float16 cast inside a ufunc's ``out=`` are much slower than float32 work.
  Integers and float32-for-float64 work are cast by the ufuncs on the fly.
  float32 logsumexp is computed in float64, as ``Call.compute_dtype`` says.

Threads: a call of at least ``PARALLEL_BYTES`` (4 MiB in the compute
dtype) is a list of units (slabs, long rows, column blocks) handed to
``_parallel``: the calling thread and pool helpers take units one at a time,
each thread with its own scratch buffers and its own ufunc settings. A unit
is computed exactly as the serial loop computes it (same bounds, so the same
BLAS calls on the same shapes), so the result is bitwise that of one thread.
How many threads: ``_parallel.max_threads()`` (CPU affinity,
``SOFTMAX_XP_NUM_THREADS``, ``softmax_xp.num_threads``, a threadpoolctl BLAS
limit; one inside Dask's workers). ``exp`` on a slab in cache is compute
bound here, so a second core pays (docs/performance.md).
Each call keeps its buffers to itself, the helper vectors it caches are
read-only, and the ufunc settings (``np.errstate``, buffer size) are per
thread and restored on exit, so concurrent calls from many threads are safe.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import _kernels as kernels
from .._call import Call, input_rounding
from .._compat import array_namespace, dtype_kind
from . import _parallel

__all__ = ["run"]

# bytes of compute dtype per slab: the slab and one or two buffers of its size
# stay in a 2 MiB L2 cache
SLAB_BYTES = 1 << 19
# (O, N, I) layout: the widest block of the inner group taken at once
LONG_INNER = 4096
# rows are summed with BLAS in blocks of this length
BLOCK = 128
# rows up to this length take their maximum from argmax
ARGMAX_ROW = 1024
# up to this many elements a call is one slab with little setup; from there on
# the ufunc buffer size is tuned, to a row's length when that is at least
# MIN_BUFSIZE (shorter buffers cost more)
SMALL = 1 << 14
MIN_BUFSIZE = 128
# calls of at least this many bytes (in the compute dtype) may use threads
PARALLEL_BYTES = 1 << 22
# elements per call of the shared shift on a special chunk (it makes temporaries)
SHIFT_PIECE = 1 << 13

# NumPy's array-api-compat namespace, for the shared kernels
NP = array_namespace(np.empty(0))


@dataclass(slots=True)
class _Setup:
    """What every slab of one call needs to know."""

    kind: str
    compute_dtype: np.dtype
    result_dtype: np.dtype  # of the array the slabs write (logsumexp's sign: compute)
    load: bool  # whether slabs are copied into a compute-dtype buffer (_load) first
    negate: bool = False
    scalar_t: float | None = None  # a Python float temperature
    rounding: np.dtype | None = None  # the narrowing dtype= x is rounded to first


class _Piece(NamedTuple):
    """Matching parts of the input, the output, the mask and the temperature."""

    x: np.ndarray
    out: np.ndarray
    where: np.ndarray | None
    temp: np.ndarray | None

    def part(self, index: Any) -> _Piece:
        w, t = self.where, self.temp
        w, t = (None if w is None else w[index]), (None if t is None else t[index])
        return _Piece(self.x[index], self.out[index], w, t)


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` computed slab by slab, or ``NotImplemented``."""
    if kind != "logsumexp" and not opts:
        res = _small(kind, call)  # the common small call, with as few steps as it takes
        if res is not None:
            return res
    compute = np.dtype(call.compute_dtype)
    if not _covered(call, compute):
        return NotImplemented
    if _fits_one_slab(call, compute, opts):
        res = _one_slab(kind, call, compute, opts)
    else:
        plan = _plan(call.x, call.axes)
        if plan is None:
            return NotImplemented
        res = _by_slabs(_setup(kind, call, opts), plan, call)
    return _finish(kind, call, res, opts)


def _small(kind: str, call: Call) -> np.ndarray | None:
    """Softmax or log_softmax of at most 64 short C-ordered float32/64 rows, or ``None``.

    The checks of ``_covered`` and ``_fits_one_slab`` for the one case that
    matters most for small calls (no mask, temperature, negation or cast),
    then ``_without_errstate``.
    """
    x, axes = call.x, call.axes
    if type(x) is not np.ndarray or call.where is not None:
        return None
    if call.temperature is not None or not axes or x.dtype != call.out_dtype:
        return None
    keep = x.ndim - len(axes)
    if not 0 < x.size <= SMALL or axes[0] != keep or not x.flags.c_contiguous:
        return None
    if keep == 1 and x.ndim == 2:
        x2 = x
    else:
        r = math.prod(x.shape[:keep])
        x2 = x.reshape(r, x.size // r)
    res = np.empty(x.shape, x.dtype)
    y2 = res if x2 is x else res.reshape(x2.shape)
    return res if _without_errstate(kind, x2, y2) else None


def _covered(call: Call, compute: np.dtype) -> bool:
    """NumPy input without weights, non-empty, real: ``call.shape`` is ``x``'s."""
    x = call.x
    numpy = type(x) is np.ndarray or isinstance(x, np.memmap)
    real = compute.kind == "f" and x.dtype.kind in "biufV"
    return numpy and real and call.b is None and x.size != 0


def _setup(kind: str, call: Call, opts: dict[str, Any]) -> _Setup:
    x, t = call.x, call.temperature
    compute = np.dtype(call.compute_dtype)
    negate = bool(opts.get("negate", False))
    rounding = _rounding(call, compute)
    load = negate or rounding is not None or call.where is not None or t is not None
    cast = x.dtype != compute and not np.can_cast(x.dtype, compute, "safe")
    return _Setup(
        kind=kind,
        compute_dtype=compute,
        result_dtype=_result_dtype(call, compute, opts),
        # half floats are loaded too: their ufunc loops are slow
        load=load or cast or x.dtype.itemsize == 2,
        negate=negate,
        scalar_t=t if isinstance(t, float) else None,
        rounding=rounding,
    )


def _result_dtype(call: Call, compute: np.dtype, opts: dict[str, Any]) -> np.dtype:
    """The output dtype, but the compute dtype for logsumexp's sign (that of the exact total)."""
    return compute if opts.get("return_sign") else np.dtype(call.out_dtype)


def _rounding(call: Call, compute: np.dtype) -> np.dtype | None:
    """The narrowing ``dtype=`` rule (``input_rounding``) for ``x``, as a rounding step.

    Non-floating ``x`` is seen in the compute dtype, as by the generic core;
    a rounding to the compute dtype itself is the cast ``_load`` makes anyway.
    """
    x = call.x
    if x.dtype == call.out_dtype:  # (the common case: nothing to round)
        return None
    floating = dtype_kind(NP, x.dtype) == "real floating"
    target = input_rounding(call, x.dtype if floating else compute)
    return None if target is None or target == compute else np.dtype(target)


def _fits_one_slab(call: Call, compute: np.dtype, opts: dict[str, Any]) -> bool:
    """The common small call: trailing axes of a C-ordered ``x``, nothing to load but half floats."""
    x, axes = call.x, call.axes
    if x.size > SMALL or not axes or axes[0] != x.ndim - len(axes):
        return False
    plain = call.temperature is None and call.where is None and not opts.get("negate")
    safe = x.dtype == compute or np.can_cast(x.dtype, compute, "safe")
    return plain and safe and x.flags.c_contiguous and _rounding(call, compute) is None


def _one_slab(
    kind: str, call: Call, compute: np.dtype, opts: dict[str, Any]
) -> np.ndarray:
    """A C-ordered ``x`` that fits in one slab, reduced over its trailing axes."""
    x, keep = call.x, call.x.ndim - len(call.axes)
    r = math.prod(x.shape[:keep])
    x2 = x.reshape(r, x.size // r)
    if kind != "logsumexp":
        res = np.empty(x.shape, call.out_dtype)
        y2 = res.reshape(x2.shape)
        if res.dtype == compute == x.dtype and _without_errstate(kind, x2, y2):
            return res
    # nothing to mask, negate, divide or round (_fits_one_slab); half floats are loaded
    result = _result_dtype(call, compute, opts)
    setup = _Setup(kind, compute, result, load=x.dtype.itemsize == 2)
    if kind == "logsumexp":
        res = np.empty(x.shape[:keep], setup.result_dtype)
        y2 = res.reshape(r, 1)
    with _raise_on_invalid():
        _slab(setup, _Buffers(compute, x.size), _Piece(x2, y2, None, None), rows=True)
    return res


def _without_errstate(kind: str, x2: np.ndarray, y2: np.ndarray) -> bool:
    """Softmax or log_softmax of a few C-ordered rows, if every maximum is moderate.

    Once the maxima are known to be below ``sqrt(max)`` in magnitude (checked
    in Python: NumPy would warn on an overflowing check), ``x - m`` can
    neither overflow nor make a NaN, so the finite formula runs without
    changing the ufunc error settings, which alone costs a noticeable part of
    such a call. A NaN maximum passes only when ``min`` / ``max`` skip it,
    and needs nothing: the formula fills its slice with NaN, silently. Only
    an underflow can then signal; a caller's ``np.errstate(under="raise")``
    makes this return ``False``, and the call takes the general path.
    ``out`` is passed by position: as a keyword it costs a microsecond more
    per ufunc call here.
    """
    r, n = x2.shape
    bound = _MODERATE.get(x2.dtype)
    if bound is None or r > 64 or kind not in _SMALL_KINDS:
        return False
    flat = None
    if n <= ARGMAX_ROW:  # as _max, without its layers
        flat = x2.argmax(axis=1)
        np.add(flat, _offsets(r, n), flat)
        m = x2.take(flat)  # (from the flattened x2)
    else:
        m = np.maximum.reduce(x2, axis=1)
    values = m.tolist()
    if not (-bound < min(values) and max(values) < bound):
        return False
    try:
        np.subtract(x2, m[:, None], y2)
        if kind == "log_softmax":
            tail = _tail(np.exp(y2), flat, rows=True)
            np.subtract(y2, np.log1p(tail), y2)
        else:
            np.exp(y2, y2)
            np.divide(y2, _sum(y2, rows=True), y2)
    except FloatingPointError:
        return False
    return True


_SMALL_KINDS = ("softmax", "log_softmax")
_MODERATE = {np.dtype(np.float32): 2.0**63, np.dtype(np.float64): 2.0**511}


def _finish(kind: str, call: Call, res: np.ndarray, opts: dict[str, Any]) -> Any:
    """logsumexp's options applied to its result."""
    if kind != "logsumexp":
        return res
    if opts.get("keepdims", False):
        res = np.expand_dims(res, call.axes)
    if not opts.get("return_sign", False):
        return res
    # res is still in the compute dtype: the sign of what was left (1), even
    # where the value rounds to -inf; 0 where nothing was; NaN with NaN
    sign = kernels.poison(NP, res, NP.astype(res > -math.inf, res.dtype))
    return kernels.round_to(NP, res, call.out_dtype), NP.astype(sign, call.out_dtype)


def _raise_on_invalid() -> np.errstate:
    """The ufunc error settings of a call: only ``inf - inf`` signals (see ``_slab``)."""
    return np.errstate(over="ignore", under="ignore", divide="ignore", invalid="raise")


# --------------------------------------------------------------------------
# layout


@dataclass(slots=True)
class _Plan:
    x3: np.ndarray  # the input as (O, N, I), a view
    perm: tuple[int, ...] | None = (
        None  # axes in the order of x3's groups (None: as is)
    )
    flip: tuple[slice, ...] | None = None  # ::-1 on the axes with negative strides


def _plan(x: np.ndarray, axes: tuple[int, ...]) -> _Plan | None:
    """The ``(O, N, I)`` view of ``x`` (see the module docstring), or ``None``."""
    shape, keep = x.shape, x.ndim - len(axes)
    if axes and x.flags.c_contiguous and axes[0] == keep:
        # the common case, trailing axes of a C-ordered array, without sorting
        n = math.prod(shape[keep:])
        return _Plan(x3=x.reshape(x.size // n, n, 1))
    flip = _flip(x)
    xf = x if flip is None else x[flip]
    groups = _groups(xf, axes)
    if groups is None:
        return None  # a kept axis lies between reduced ones in memory
    ones = [a for a in range(x.ndim) if shape[a] == 1]
    perm = (*ones, *(a for g in groups for a in g))
    x3 = _reshaped(
        xf.transpose(perm), tuple(math.prod(shape[a] for a in g) for g in groups)
    )
    return None if x3 is None else _Plan(x3=x3, perm=perm, flip=flip)


def _flip(x: np.ndarray) -> tuple[slice, ...] | None:
    """The index that reverses the axes with negative strides, or ``None``."""
    rev = [x.strides[a] < 0 and x.shape[a] > 1 for a in range(x.ndim)]
    if not any(rev):
        return None
    return tuple(slice(None, None, -1) if r else slice(None) for r in rev)


def _groups(x: np.ndarray, axes: tuple[int, ...]) -> list[list[int]] | None:
    """The outer, reduced and inner axes of ``x`` (longer than 1) in memory order."""
    order = sorted(
        (a for a in range(x.ndim) if x.shape[a] > 1), key=lambda a: (-x.strides[a], a)
    )
    reds = [a for a in order if a in axes]
    if not reds:
        return [[], [], order]
    first, last = order.index(reds[0]), order.index(reds[-1])
    if last - first + 1 != len(reds):
        return None
    return [order[:first], reds, order[last + 1 :]]


def _view(a: Any, shape: tuple[int, ...], plan: _Plan) -> np.ndarray:
    """A mask or temperature array in ``plan``'s ``(O, N, I)`` layout.

    A broadcast that the layout cannot merge without a copy is materialised
    (the only full-size temporary, and only for such shapes).
    """
    arr = np.broadcast_to(np.asarray(a), shape)
    if plan.flip is not None:
        arr = arr[plan.flip]
    if plan.perm is not None:
        arr = arr.transpose(plan.perm)
    view = _reshaped(arr, plan.x3.shape)
    return np.ascontiguousarray(arr).reshape(plan.x3.shape) if view is None else view


# reshape(copy=False) exists from NumPy 2.1 on (the floor is 2.0)
_RESHAPE_COPY = np.lib.NumpyVersion(np.__version__) >= "2.1.0"


def _reshaped(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``a`` reshaped as a view, or ``None`` where that would need a copy."""
    if _RESHAPE_COPY:
        try:
            return np.reshape(a, shape, copy=False)
        except ValueError:
            return None
    view = a.view()
    try:
        view.shape = shape  # NumPy < 2.1: raises instead of copying
    except AttributeError:
        return None
    return view


# --------------------------------------------------------------------------
# slab schedule


class _Buffers:
    """Slab-sized scratch arrays in the compute dtype, by name, each made on first use.

    ``"work"``: the loaded slab, then ``z``, then (softmax) ``exp(z)``;
    ``"exps"``: ``exp(z)`` where ``z`` is kept (log_softmax);
    ``"halves"``: the first level of a pairwise column sum.
    """

    __slots__ = ("_arrays", "_dtype", "_size")

    def __init__(self, dtype: np.dtype, size: int) -> None:
        self._dtype, self._size = dtype, size
        self._arrays: dict[str, np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        flat = self._arrays.get(name)
        if flat is None:
            flat = self._arrays[name] = np.empty(self._size, self._dtype)
        return flat[: math.prod(shape)].reshape(shape)


def _by_slabs(setup: _Setup, plan: _Plan, call: Call) -> np.ndarray:
    """The result of a call larger than one slab, in ``x``'s axis order."""
    x, t, lse = call.x, call.temperature, setup.kind == "logsumexp"
    where = None if call.where is None else _view(call.where, x.shape, plan)
    temp = None if t is None or isinstance(t, float) else _view(t, x.shape, plan)
    order = range(x.ndim) if plan.perm is None else plan.perm
    shape = [1 if lse and a in call.axes else x.shape[a] for a in order]
    res = np.empty(shape, setup.result_dtype)
    o, n, i = plan.x3.shape
    whole = _Piece(plan.x3, res.reshape(o, 1 if lse else n, i), where, temp)
    with _raise_on_invalid():  # (restores the buffer size _sweep may set, NumPy >= 2)
        _sweep(setup, whole)
    if plan.perm is not None:
        res = res.transpose([plan.perm.index(a) for a in range(x.ndim)])
    res = res if plan.flip is None else res[plan.flip]
    return np.squeeze(res, axis=call.axes) if lse else res


def _sweep(setup: _Setup, whole: _Piece) -> None:
    """Run the kernel over slabs of ``whole`` (an ``(O, N, I)`` piece).

    The work is a list of units (slabs, long rows, blocks of columns), each
    computed the same way by whichever thread takes it (``_parallel``).
    """
    o, n, i = whole.x.shape
    compute = setup.compute_dtype
    slab = max(1, SLAB_BYTES // max(compute.itemsize, whole.x.dtype.itemsize))
    unit: Any
    if n * i <= slab:  # rows, or whole (ob, N, I) boxes (few, short slices), in cache
        rows = i == 1
        inner = n if rows else 0
        step = max(1, slab // (n * i))
        size = min(step, o) * n * i
        piece = whole.part((Ellipsis, 0)) if rows else whole
        count = -(-o // step)

        def unit(bufs: _Buffers, k: int) -> None:
            a = k * step
            _slab(setup, bufs, piece.part(slice(a, a + step)), rows=rows)

    elif i == 1:  # long rows: one row at a time, in chunks
        inner, size, count = 0, slab, o
        long_rows = whole.part((Ellipsis, 0))

        def unit(bufs: _Buffers, k: int) -> None:
            _block(setup, bufs, long_rows.part(slice(k, k + 1)), slab)

    else:  # blocks (1, N, ib) in chunks of whole rows (see the module docstring)
        ib = min(i, LONG_INNER)
        inner, size, across = ib, max(slab, ib), -(-i // ib)
        count = o * across

        def unit(bufs: _Buffers, k: int) -> None:
            a, b = divmod(k, across)
            b *= ib
            part = whole.part((slice(a, a + 1), slice(None), slice(b, b + ib)))
            _block(setup, bufs, part, max(1, slab // ib))

    tune_bufsize = whole.x.size > SMALL and inner > 0
    threads = 1
    if count > 1 and whole.x.size * compute.itemsize >= PARALLEL_BYTES:
        threads = _parallel.max_threads()
    if threads == 1:  # in the caller's ufunc settings (_by_slabs)
        if tune_bufsize:
            _bufsize(inner)
        bufs = _Buffers(compute, size)
        for k in range(count):
            unit(bufs, k)
        return

    @contextlib.contextmanager
    def open_thread() -> Iterator[_Buffers]:
        with _raise_on_invalid():  # each thread's own ufunc settings, restored
            if tune_bufsize:
                _bufsize(inner)
            yield _Buffers(compute, size)  # each thread's own scratch

    _parallel.run(open_thread, unit, count, threads)


def _bufsize(inner: int) -> None:
    """Keep NumPy from buffering a broadcast ``(rows, 1)`` operand (see the docstring)."""
    if MIN_BUFSIZE <= inner < np.getbufsize():
        np.setbufsize(inner // 16 * 16)


def _slab(setup: _Setup, bufs: _Buffers, piece: _Piece, *, rows: bool) -> None:
    """One slab that fits in cache: every pass runs while it is there.

    The finite formula runs first, unchecked: a slice whose maximum is +-inf
    makes ``inf - inf`` in the shift, which raises under ``_raise_on_invalid``,
    and the slab is done again as a block of one chunk (``_block``), where
    such slices take the shared kernels' ``z``. A NaN slice needs no alarm:
    the finite formula fills it with NaN, which is the answer.
    """
    try:
        if _finite_slab(setup, bufs, piece, rows=rows):
            return
    except FloatingPointError:
        pass
    _block(setup, bufs, piece, piece.x.shape[1])


# --------------------------------------------------------------------------
# the finite formula


# read-only helper vectors, made once per (length, dtype) and (rows, length)
@functools.lru_cache(maxsize=256)
def _ones(n: int, dt: np.dtype) -> np.ndarray:
    ones = np.ones(n, dt)
    ones.flags.writeable = False
    return ones


@functools.lru_cache(maxsize=256)
def _offsets(rows: int, n: int) -> np.ndarray:
    """Flat index of each row's start in a C-ordered ``(rows, n)`` slab."""
    off = np.arange(0, rows * n, n)
    off.flags.writeable = False
    return off


def _load(setup: _Setup, piece: _Piece, dst: np.ndarray) -> np.ndarray:
    """``piece.x`` in the compute dtype, masked, negated and divided by temperature, into ``dst``.

    The order is the generic core's: round to a narrowing ``dtype=``, mask
    (masked entries read ``-inf`` after any negation), negate, then divide
    the finite values by the temperature.
    """
    compute, scalar_t, xs, ws = (
        setup.compute_dtype,
        setup.scalar_t,
        piece.x,
        piece.where,
    )
    if setup.rounding is not None:
        # kernels.round_to by a cast (overflow to +-inf is IEEE's rounding, and
        # silent under the call's error settings): round_to's clamps made
        # dtype= calls 1.3-2.3x slower (docs/performance.md)
        xs = xs.astype(setup.rounding)  # a slab-sized copy
    if ws is None and scalar_t is not None and not setup.negate:
        # x / t keeps +-inf and NaN as they are: no need to pick finite values
        np.divide(xs, scalar_t, out=dst, dtype=compute, casting="unsafe")
        return dst
    if ws is not None:
        dst.fill(-math.inf)
    where = True if ws is None else ws
    if setup.negate:
        np.negative(xs, out=dst, where=where, dtype=compute, casting="unsafe")
    else:
        np.copyto(dst, xs, casting="unsafe", where=where)
    if scalar_t is not None:
        np.divide(dst, scalar_t, out=dst)
    elif piece.temp is not None:
        finite = np.isfinite(dst)
        np.divide(
            dst, piece.temp, out=dst, where=finite, dtype=compute, casting="unsafe"
        )
    return dst


def _max(
    compute: np.dtype, src: np.ndarray, rows: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Slice maxima (keepdims, compute dtype) and, for rows, the flat index of one."""
    flat = None
    if rows and src.shape[1] <= ARGMAX_ROW and src.flags.c_contiguous:
        r, n = src.shape
        flat = src.argmax(axis=1)
        flat += _offsets(r, n)
        m = src.reshape(-1).take(flat)[:, None]
    else:
        m = np.maximum.reduce(src, axis=1, keepdims=True)
    if m.dtype != compute:
        m = m.astype(compute)
    return m, flat


def _sum(e: np.ndarray, rows: bool, bufs: _Buffers | None = None) -> np.ndarray:
    """Slice sums (keepdims) of a slab.

    Contiguous rows are summed by BLAS in blocks of at most 128 (where one
    BLAS dot is as accurate as NumPy's own 8-way unrolled block sum) and the
    block sums summed again: NumPy's pairwise sum in two levels, at a
    fraction of its cost.
    """
    s: np.ndarray
    if rows and e.flags.c_contiguous:
        r, n = e.shape
        if n <= BLOCK:
            s = e.dot(_ones(n, e.dtype))
            return s[:, None]
        if n % BLOCK == 0:
            k = n // BLOCK
            part: np.ndarray = e.reshape(r * k, BLOCK).dot(_ones(BLOCK, e.dtype))
            if k <= BLOCK:
                s = part.reshape(r, k).dot(_ones(k, e.dtype))
                return s[:, None]
            return np.add.reduce(part.reshape(r, k), axis=1, keepdims=True)
    if e.ndim == 3:
        return _column_sum(e, bufs)
    return np.add.reduce(e, axis=1, keepdims=True)


def _column_sum(e: np.ndarray, bufs: _Buffers | None) -> np.ndarray:
    """Sums over axis 1 of an ``(o, N, I)`` slab (keepdims), pairwise.

    NumPy reduces a non-contiguous axis row after row (its pairwise sum only
    runs along a contiguous inner loop), an error growing like ``N`` ulps.
    Here the two halves of the rows are added elementwise, and so on:
    ``log2(N)`` roundings deep, as many additions as NumPy's, each a
    contiguous elementwise ``add`` into one slab-sized buffer (as fast as
    ``add.reduce`` or faster, much faster for narrow ``I``).
    """
    o, n, i = e.shape
    if n <= 2:
        return np.add.reduce(e, axis=1, keepdims=True)
    h = n // 2
    shape = (o, n - h, i)
    parts = np.empty(shape, e.dtype) if bufs is None else bufs.take("halves", shape)
    np.add(e[:, :h], e[:, n - h :], out=parts[:, :h])
    if n - h > h:  # the middle row of an odd count waits for the next level
        parts[:, h] = e[:, h]
    return _fold(parts).copy()  # parts may be a scratch buffer


def _fold(parts: np.ndarray) -> np.ndarray:
    """The pairwise sum over axis 1 of ``parts`` (overwritten), keepdims."""
    k = parts.shape[1]
    while k > 1:
        h = k // 2
        # the first h add the last h; an odd middle one waits for the next level
        np.add(parts[:, :h], parts[:, k - h : k], out=parts[:, :h])
        k -= h
    return parts[:, :1]


def _tail(
    e: np.ndarray, flat: np.ndarray | None, rows: bool, bufs: _Buffers | None = None
) -> np.ndarray:
    """``s'``: the sum of ``e`` without one maximum's term (which is exactly 1).

    ``e`` is a scratch buffer and is overwritten.
    """
    if flat is not None:
        e.reshape(-1)[flat] = 0.0
        return _sum(e, rows, bufs)
    s = _sum(e, rows, bufs)
    small = s < 2.0
    if not small.any():
        np.subtract(s, 1.0, out=s)
        return s
    # S < 2 means one maximum: the only term equal to 1 (a second would make S >= 2)
    np.copyto(e, 0.0, where=(e == 1.0) & small)
    return np.where(small, _sum(e, rows, bufs), s - 1.0)


def _store(work: np.ndarray, ys: np.ndarray) -> None:
    """The one rounding to a narrower output dtype, unless ``work`` is the output.

    A separate cast: NumPy's float32 -> float16 conversion inside a ufunc with
    ``out=`` a float16 array is much slower than this copy.
    """
    if work is not ys:
        np.copyto(ys, work, casting="unsafe")


def _finite_slab(setup: _Setup, bufs: _Buffers, piece: _Piece, *, rows: bool) -> bool:
    """The finite formula on a slab in cache; ``False`` for a masked slab with a special slice."""
    kind, compute, ys = setup.kind, setup.compute_dtype, piece.out
    direct = kind != "logsumexp" and ys.dtype == compute
    work = ys if direct else bufs.take("work", piece.x.shape)
    src = _load(setup, piece, work) if setup.load else piece.x
    m, flat = _max(compute, src, rows)
    if piece.where is not None and not np.isfinite(m).all():
        return False
    np.subtract(src, m, out=work, dtype=compute, casting="unsafe")
    if kind == "softmax":
        np.exp(work, out=work)
        np.divide(work, _sum(work, rows, bufs), out=work)
    else:
        e = bufs.take("exps", work.shape) if kind == "log_softmax" else work
        np.exp(work, out=e)
        log_sum = np.log1p(_tail(e, flat, rows, bufs))
        if kind == "logsumexp":
            np.copyto(ys, m + log_sum, casting="unsafe")
            return True
        np.subtract(work, log_sum, out=work)
    _store(work, ys)
    return True


class _Chunks:
    """A block of slices read in chunks along them (longer than a slab, or special).

    Made with the first sweep: the slice maxima ``m`` and whether one is not
    finite (``special``: then ``z`` is the shared kernels').
    """

    __slots__ = ("_block", "_bufs", "_setup", "m", "parts", "special")

    def __init__(self, setup: _Setup, bufs: _Buffers, block: _Piece, length: int):
        self._setup, self._bufs, self._block = setup, bufs, block
        self.parts = [slice(j, j + length) for j in range(0, block.x.shape[1], length)]
        if setup.load:  # chunk by chunk, as loaded
            m = np.full(block.x[:, :1].shape, -math.inf, setup.compute_dtype)
            for s in self.parts:
                chunk = self.loaded(s, bufs.take("work", block.x[:, s].shape))
                np.maximum(m, np.maximum.reduce(chunk, axis=1, keepdims=True), out=m)
        else:  # one reduction over the block
            m = np.maximum.reduce(block.x, axis=1, keepdims=True)
        self.m = m.astype(setup.compute_dtype, copy=False)
        self.special = not np.isfinite(self.m).all()

    def loaded(self, s: slice, dst: np.ndarray) -> np.ndarray:
        """Chunk ``s`` as the finite formula reads it (into ``dst`` where it must be loaded)."""
        chunk = self._block.part((slice(None), s))
        return _load(self._setup, chunk, dst) if self._setup.load else chunk.x

    def shifted(self, s: slice, dst: np.ndarray) -> np.ndarray:
        """``z`` of chunk ``s``, into ``dst``."""
        compute, src = self._setup.compute_dtype, self.loaded(s, dst)
        if not self.special:
            np.subtract(src, self.m, out=dst, dtype=compute, casting="unsafe")
            return dst
        # the shared shift, on pieces of SHIFT_PIECE: it makes a few temporaries
        step = max(1, SHIFT_PIECE * dst.shape[1] // dst.size)
        for j in range(0, dst.shape[1], step):
            src_j = src[:, j : j + step].astype(compute, copy=False)
            dst[:, j : j + step] = kernels.shift(NP, src_j, (1,), self.m).z
        return dst

    def exp_sums(self, out: np.ndarray | None, small: np.ndarray | None = None) -> Any:
        """Sums of ``exp(z)``, pairwise; where ``small``, without the terms equal to 1.

        ``exp(z)`` (softmax) or ``z`` (log_softmax) is kept in ``out``.
        """
        kind, bufs, rows = self._setup.kind, self._bufs, self._block.x.ndim == 2
        counter: list[tuple[int, np.ndarray]] = []
        keep_z = out is not None and kind == "log_softmax"
        for s in self.parts:
            shape = self._block.x[:, s].shape
            z = self.shifted(s, bufs.take("work", shape) if out is None else out[:, s])
            e = bufs.take("exps", shape) if keep_z else z
            np.exp(z, out=e)
            if small is not None:
                np.copyto(e, 0.0, where=(e == 1.0) & small)
            _count(counter, _sum(e, rows, bufs))
        return _fold(np.concatenate([part for _, part in counter], axis=1))

    def scale(self, by: np.ndarray, direct: bool) -> None:
        """The output: ``exp(z) / by`` (softmax) or ``z - by``, NaN slices poisoned."""
        softmax, out = self._setup.kind == "softmax", self._block.out
        op = np.divide if softmax else np.subtract
        if direct:  # exp(z) or z is in the output already: one streaming pass
            op(out, by, out=out)
        for s in self.parts:
            chunk = self._block.part((slice(None), s))
            if not direct:
                work = self.shifted(s, self._bufs.take("work", chunk.x.shape))
                op(np.exp(work, out=work) if softmax else work, by, out=work)
                _store(work, chunk.out)
            if self.special:
                np.copyto(chunk.out, kernels.poison(NP, self.m, chunk.out, chunk.where))


def _count(counter: list[tuple[int, np.ndarray]], s: np.ndarray) -> None:
    """Add ``s`` to a binary counter of partial sums (pairwise: ``log2(count)`` deep)."""
    level = 0
    while counter and counter[-1][0] == level:
        s = counter.pop()[1] + s
        level += 1
    counter.append((level, s))


def _block(setup: _Setup, bufs: _Buffers, block: _Piece, length: int) -> None:
    """A block of slices in three sweeps over chunks of ``length``.

    The maximum; ``exp(z)`` and its sum, kept in the output when it can hold
    them; the scaling, in one pass over the output or, where it could not
    hold them, recomputing ``exp`` chunk by chunk. Where a maximum is not
    finite, the divisor is the log1p form's ``1 + s'`` (``S`` is 0 where
    nothing is left), as in the generic core, and the finish the shared
    ``lse_from_state``.
    """
    chunks = _Chunks(setup, bufs, block, length)
    kind = setup.kind
    direct = kind != "logsumexp" and block.out.dtype == setup.compute_dtype
    total = chunks.exp_sums(block.out if direct else None)
    if kind == "softmax" and not chunks.special:
        chunks.scale(total, direct)
        return
    small = total < 2.0  # see _tail: S < 2 is summed again without the term 1
    tail = total - 1.0
    if small.any():
        tail = np.where(small, chunks.exp_sums(None, small), tail)
    if kind == "logsumexp":
        lse = kernels.lse_from_state(NP, chunks.m, tail)
        np.copyto(block.out, lse, casting="unsafe")
    else:
        chunks.scale(1.0 + tail if kind == "softmax" else np.log1p(tail), direct)
