"""NumPy: a cache-blocked kernel that writes the output once.

The generic core makes about a dozen full-size temporaries; here the work is
split into slabs of half a MiB that stay in the CPU cache while the maximum,
the shift, ``exp``, the sum and the scaling run over them, each a ufunc
writing into the output or a slab-sized buffer (``out=``). Nothing full-size
is allocated but the output.

Layout. The input is viewed, without a copy, as ``(O, N, I)``: the reduced
axes merged into ``N``, the other axes into an outer ``O`` and an inner ``I``
group, in the input's own memory order (axes with negative strides flipped
first; the output is laid out to match). With ``I == 1`` the slabs are blocks
of whole rows. Otherwise (``axis=0`` of a C-ordered array, Fortran order)
the slices are columns: small problems take whole ``(o, N, I)`` boxes, larger
ones blocks of full-width rows, so that the reductions combine contiguous
rows elementwise (narrow boxes of full columns ran NumPy's inner loops over
a few elements each, 5-20x slower). A slice too long for one slab (64 x
1,000,000; 1-D; those columns) is done in three sweeps: its maximum, then the
shifted ``exp`` and its sum chunk by chunk (kept in the output where it can
hold them), then the scaling. Layouts that do not merge (a kept axis between
reduced ones in memory) go to the generic core.

Tricks, each measured on a loaded 2-core Xeon (AVX-512, NumPy 2.4):

- the row maximum comes from ``argmax`` plus a gather for rows up to 1024:
  NumPy's ``argmax`` loops over rows without the ufunc machinery, 2-3x
  faster than ``max(axis=-1)`` there; its index also marks the one maximum
  that the log1p form keeps out of the sum.
- contiguous rows are summed by BLAS (``dot`` with ones) in blocks of 128,
  whose sums are summed again: at that length one BLAS dot is as accurate as
  NumPy's 8-way unrolled block sum, so this is NumPy's pairwise sum in two
  levels, at a third of its cost (a plain BLAS row sum of 4096 measured 4x
  NumPy's error; the contract's 4-ulp bound has no room for it).
- columns (axis 1 of ``(o, N, I)`` slabs) are summed pairwise by halving
  (``_column_sum``), and the chunk sums of a long slice by a binary counter
  (``_Pairwise``): NumPy adds a non-contiguous axis row after row, which
  cost 10 ulp on 1,000-long columns; halving costs no more time.
- the ufunc buffer is set to a row's length (when at least 128): with the
  default 8192 elements NumPy copies a broadcast ``(rows, 1)`` operand through
  its buffers, which made ``x - m`` and the division 3-4x slower than the
  same ufunc on a scalar. For shorter rows smaller buffers cost more.
- special slices (NaN, ``+inf``, nothing left) are rare, so each slab first
  runs the finite formula unchecked, under ``np.errstate(invalid="raise")``:
  a slice whose maximum is ``+-inf`` makes ``inf - inf`` in the shift, and
  the slab is done again with the contract's rebuilding of ``z`` (as in the
  generic core). A NaN slice raises nothing and needs nothing: the finite
  formula fills it with NaN (masked slabs are checked explicitly, as their
  masked entries must stay 0 / ``-inf``).
- log1p form: with the maximum's ``exp`` set to 0 before the sum, the sum is
  ``s'`` itself (tied maxima add their 1 each). Where no ``argmax`` is at
  hand, ``s' = S - 1`` is exact enough once ``S >= 2``, and the slices with
  ``S < 2`` (they have one maximum, the only ``exp`` equal to 1) are summed
  again without it.
- a small call (up to 16K elements, trailing axes, C order, nothing to mask
  or cast) skips the slab machinery, and softmax / log_softmax even skip
  ``np.errstate`` once the maxima are known to be moderate.
- float16 / bfloat16 slabs are copied into float32 first and rounded once,
  by a copy, at the end: NumPy's half-precision loops and its float32 ->
  float16 cast inside a ufunc's ``out=`` measured 5-10x slower than float32
  work. Integers and float32-for-float64 work are cast by the ufuncs on the
  fly. float32 logsumexp is computed in float64, as ``Call.compute_dtype``
  says for NumPy.

No thread pool: on the 2-core machine a second thread gave nothing (``exp``
alone is memory-bound there), and a default right for 2 and 64 cores would
need a measurement this module cannot make. Each call keeps its buffers to
itself, the helper vectors it caches are read-only, and the ufunc settings
(``np.errstate``, buffer size) are per thread and restored on exit, so
concurrent calls from many threads are safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._call import Call

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

_INF = math.inf


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` computed slab by slab, or ``NotImplemented``."""
    x = call.x
    if type(x) is not np.ndarray and not isinstance(x, np.memmap):
        return NotImplemented
    if call.b is not None or x.size == 0:  # no weights: call.shape is x's
        return NotImplemented
    cd = np.dtype(call.compute_dtype)
    od = np.dtype(call.out_dtype)
    if cd.kind != "f" or x.dtype.kind not in "biufV":  # complex logsumexp
        return NotImplemented
    negate = bool(opts.get("negate", False))
    # the sign is that of the exact total: taken before the rounding to od
    rd = cd if opts.get("return_sign", False) else od
    # a narrowing dtype= rounds x to od first, as the generic core does, even
    # where the work is wider (half outputs, float32 logsumexp in float64)
    # (logsumexp, a reduction, rounds half outputs once at the end: float32)
    nominal = od if kind != "logsumexp" or od.itemsize > 4 else np.dtype(np.float32)
    via = None
    if nominal not in (cd, x.dtype) and not np.can_cast(x.dtype, nominal):
        via = nominal
    t = call.temperature
    axes, nd = call.axes, x.ndim
    if (
        via is None
        and axes
        and axes[0] == nd - len(axes)
        and (x.dtype == cd or np.can_cast(x.dtype, cd, "safe"))
        and t is None
        and call.where is None
        and not negate
        and x.flags.c_contiguous
        and x.size <= SMALL
    ):
        # the common small call: trailing axes, nothing to load, one slab
        res = _one_slab(kind, x, nd - len(axes), cd, rd if kind == "logsumexp" else od)
        return _finish(kind, call, od, res, opts)
    plan = _plan(x, axes)
    if plan is None:
        return NotImplemented
    scalar_t = t if isinstance(t, float) else None
    where = None if call.where is None else _view(call.where, x.shape, plan)
    temp = None if t is None or scalar_t is not None else _view(t, x.shape, plan)
    # slabs are copied into a compute-dtype buffer first unless the ufuncs can
    # read x as it is (a safe cast: integers, float32 for float64 work)
    load = (
        negate
        or via is not None
        or where is not None
        or t is not None
        or (x.dtype != cd and not np.can_cast(x.dtype, cd, "safe"))
        or x.dtype.itemsize == 2  # half floats: their ufunc loops are slow
    )
    ctx = _Ctx(kind, cd, load, negate, scalar_t, via)
    if kind == "logsumexp":
        res = np.empty(plan.batch_shape, rd)
        out3 = res.reshape(plan.o, 1, plan.i)
    else:
        res = np.empty(plan.perm_shape, od)
        out3 = res.reshape(plan.o, plan.n, plan.i)
    with _alarm():
        # errstate restores the buffer size with NumPy 2's context, not with 1.26
        bufsize = np.getbufsize()
        try:
            _sweep(ctx, plan, out3, where, temp)
        finally:
            if np.getbufsize() != bufsize:
                np.setbufsize(bufsize)
    if kind != "logsumexp":
        return _arrange(res, plan.inverse, plan.flip)
    lse = _arrange(res, plan.batch_inverse, plan.batch_flip)
    return _finish(kind, call, od, lse, opts)


def _one_slab(
    kind: str, x: np.ndarray, keep: int, cd: np.dtype, od: np.dtype
) -> np.ndarray:
    """A C-ordered ``x`` that fits in one slab, reduced over its trailing axes."""
    r = math.prod(x.shape[:keep])
    x2 = x.reshape(r, x.size // r)
    if kind == "logsumexp":
        res = np.empty(x.shape[:keep], od)
        y2 = res.reshape(r, 1)
    else:
        res = np.empty(x.shape, od)
        y2 = res.reshape(x2.shape)
        if od == cd == x.dtype and _unguarded(kind, x2, y2):
            return res
    with _alarm():
        ctx = _Ctx(kind, cd, x.dtype.itemsize == 2, False, None)
        _slab(ctx, _Buffers(cd, x.size), x2, y2, None, None, rows=True)
    return res


def _unguarded(kind: str, x2: np.ndarray, y2: np.ndarray) -> bool:
    """Softmax or log_softmax of a few C-ordered rows, if every maximum is moderate.

    Once the maxima are known to be finite and below ``sqrt(max)`` (checked in
    Python: NumPy would warn on an overflowing check), ``x - m`` can neither
    overflow nor make a NaN, so the finite formula runs without changing the
    ufunc error settings, which alone costs about a tenth of such a call.
    Only an underflow can then signal; a caller's ``np.errstate(under="raise")``
    makes this return ``False``, and the call takes the general path.
    """
    r, n = x2.shape
    bound = _MODERATE.get(x2.dtype)
    if bound is None or r > 64:
        return False
    flat = None
    if n <= ARGMAX_ROW:  # as _max, without its layers
        flat = x2.argmax(axis=1)
        flat += _offsets(r, n)
        mv = x2.reshape(-1).take(flat)
    else:
        mv = np.maximum.reduce(x2, axis=1)
    if not all(-bound < v < bound for v in mv.tolist()):  # NaN fails too
        return False
    try:
        np.subtract(x2, mv[:, None], out=y2)
        if kind == "softmax":
            np.exp(y2, out=y2)
            np.divide(y2, _sum(y2, rows=True), out=y2)
        else:
            tail = _tail(np.exp(y2), flat, rows=True)
            np.subtract(y2, np.log1p(tail), out=y2)
    except FloatingPointError:
        return False
    return True


_MODERATE = {np.dtype(np.float32): 2.0**63, np.dtype(np.float64): 2.0**511}


def _finish(
    kind: str, call: Call, od: np.dtype, res: np.ndarray, opts: dict[str, Any]
) -> Any:
    """logsumexp's options applied to its result."""
    if kind != "logsumexp":
        return res
    if opts.get("keepdims", False):
        res = np.expand_dims(res, call.axes)
    if opts.get("return_sign", False):
        # res is still in the compute dtype: the sign of what was left, even
        # where the value rounds to -inf in od
        return _round(res, od), _sign(res, od)
    return res


def _round(res: np.ndarray, od: np.dtype) -> np.ndarray:
    """``res`` rounded once to ``od`` (beyond its range: +-inf, without a warning)."""
    if res.dtype == od:
        return res
    with np.errstate(over="ignore"):
        return res.astype(od)


def _alarm() -> np.errstate:
    """The ufunc error settings of a call (see _slab); one object per call, per thread."""
    return np.errstate(over="ignore", under="ignore", divide="ignore", invalid="raise")


def _arrange(
    res: np.ndarray, inverse: tuple[int, ...] | None, flip: tuple[slice, ...] | None
) -> np.ndarray:
    """The result in the input's axis order (indexing a 0-d array would give a scalar)."""
    if inverse is not None:
        res = res.transpose(inverse)
    return res if flip is None else res[flip]


def _sign(lse: np.ndarray, od: np.dtype) -> np.ndarray:
    """1 where something was left, 0 where nothing was, NaN with NaN (as the generic core)."""
    sign = np.array(lse > -_INF, dtype=od)
    np.copyto(sign, np.nan, where=np.isnan(lse))
    return sign


# --------------------------------------------------------------------------
# layout


@dataclass(slots=True)
class _Plan:
    x3: np.ndarray  # the input as (O, N, I), a view
    o: int
    n: int
    i: int
    flip: tuple[slice, ...] | None  # ::-1 on the axes with negative strides
    perm: tuple[int, ...] | None  # axes in the order of x3's groups (None: as is)
    perm_shape: tuple[int, ...]
    inverse: tuple[int, ...] | None
    batch_shape: tuple[int, ...]  # logsumexp: the kept axes, in that order
    batch_inverse: tuple[int, ...] | None
    batch_flip: tuple[slice, ...] | None


def _plan(x: np.ndarray, axes: tuple[int, ...]) -> _Plan | None:
    """The ``(O, N, I)`` view of ``x`` (see the module docstring), or ``None``."""
    shape, nd, k = x.shape, x.ndim, len(axes)
    if k and x.flags.c_contiguous and axes[0] == nd - k:
        # the common case, trailing axes of a C-ordered array, without sorting
        n = math.prod(shape[nd - k :])
        o = x.size // n
        return _Plan(
            x.reshape(o, n, 1), o, n, 1, None, None, shape, None, shape[: nd - k],
            None, None,
        )  # fmt: skip
    red = set(axes)
    flips = [a for a in range(nd) if x.strides[a] < 0 and shape[a] > 1]
    flip = (
        tuple(slice(None, None, -1) if a in flips else slice(None) for a in range(nd))
        if flips
        else None
    )
    xf = x if flip is None else x[flip]
    strides = xf.strides
    order = sorted(
        (a for a in range(nd) if shape[a] > 1), key=lambda a: (-strides[a], a)
    )
    reds = [a for a in order if a in red]
    if reds:
        first, last = order.index(reds[0]), order.index(reds[-1])
        if last - first + 1 != len(reds):
            return None  # a kept axis lies between reduced ones in memory
        outer, inner = order[:first], order[last + 1 :]
    else:
        outer, inner = [], order
    perm = (*(a for a in range(nd) if shape[a] == 1), *outer, *reds, *inner)
    o = math.prod(shape[a] for a in outer)
    n = math.prod(shape[a] for a in reds)
    i = math.prod(shape[a] for a in inner)
    x3 = _reshaped(xf.transpose(perm), (o, n, i))
    if x3 is None:
        return None
    batch = [a for a in perm if a not in red]
    kept = sorted(batch)
    return _Plan(
        x3=x3,
        o=o,
        n=n,
        i=i,
        flip=flip,
        perm=perm,
        perm_shape=tuple(shape[a] for a in perm),
        inverse=tuple(perm.index(a) for a in range(nd)),
        batch_shape=tuple(shape[a] for a in batch),
        batch_inverse=tuple(batch.index(a) for a in kept),
        batch_flip=None if flip is None else tuple(flip[a] for a in kept),
    )


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
    target = (plan.o, plan.n, plan.i)
    view = _reshaped(arr, target)
    return np.ascontiguousarray(arr).reshape(target) if view is None else view


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


class _Ctx:
    """What every slab of one call needs to know."""

    __slots__ = ("cd", "kind", "load", "negate", "scalar_t", "via")

    def __init__(
        self,
        kind: str,
        cd: np.dtype,
        load: bool,
        negate: bool,
        scalar_t: float | None,
        via: np.dtype | None = None,
    ) -> None:
        self.via = via  # the dtype x is rounded to before the compute dtype
        self.kind = kind
        self.cd = cd  # compute dtype
        self.load = load  # whether slabs go through _load first
        self.negate = negate
        self.scalar_t = scalar_t


class _Buffers:
    """Slab-sized scratch arrays in the compute dtype, made on first use."""

    __slots__ = ("_a", "_b", "_c", "_cd", "size")

    def __init__(self, cd: np.dtype, size: int) -> None:
        self.size = size
        self._cd = cd
        self._a: np.ndarray | None = None
        self._b: np.ndarray | None = None
        self._c: np.ndarray | None = None  # column sums' scratch

    def a(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._a is None:
            self._a = np.empty(self.size, self._cd)
        return self._a[: math.prod(shape)].reshape(shape)

    def b(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._b is None:
            self._b = np.empty(self.size, self._cd)
        return self._b[: math.prod(shape)].reshape(shape)

    def c(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._c is None:
            self._c = np.empty(self.size, self._cd)
        return self._c[: math.prod(shape)].reshape(shape)


def _sweep(
    ctx: _Ctx,
    plan: _Plan,
    out3: np.ndarray,
    where: np.ndarray | None,
    temp: np.ndarray | None,
) -> None:
    """Run the kernel over slabs of ``plan.x3`` writing ``out3``."""
    x3, o, n, i = plan.x3, plan.o, plan.n, plan.i
    width = max(ctx.cd.itemsize, x3.dtype.itemsize)
    slab = max(1, SLAB_BYTES // width)  # elements per slab
    big = x3.size > SMALL

    def part(a: np.ndarray | None, s: Any) -> np.ndarray | None:
        return None if a is None else a[s]

    if i == 1:
        x2, y2 = x3[:, :, 0], out3[:, :, 0]
        w2, t2 = part(where, (Ellipsis, 0)), part(temp, (Ellipsis, 0))
        if n <= slab:
            if big:
                _bufsize(n)
            step = max(1, slab // n)
            bufs = _Buffers(ctx.cd, min(step, o) * n)
            for a in range(0, o, step):
                s = slice(a, a + step)
                _slab(ctx, bufs, x2[s], y2[s], part(w2, s), part(t2, s), rows=True)
        else:  # long rows: one row at a time, in chunks
            bufs = _Buffers(ctx.cd, slab)
            for a in range(o):
                s = slice(a, a + 1)
                _chunked(ctx, bufs, slab, x2[s], y2[s], part(w2, s), part(t2, s))
        return
    if n * i <= slab:
        # whole (ob, N, I) boxes in cache (few, short slices)
        ob = max(1, slab // (n * i))
        bufs = _Buffers(ctx.cd, min(ob, o) * n * i)
        for a in range(0, o, ob):
            s = slice(a, a + ob)
            _slab(ctx, bufs, x3[s], out3[s], part(where, s), part(temp, s), rows=False)
        return
    # blocks (1, N, ib) in chunks of whole rows: the reductions combine
    # contiguous rows elementwise (narrow boxes of full columns would run
    # NumPy's inner loops over a few elements each, measured 5-20x slower)
    ib = min(i, LONG_INNER)
    if big:
        _bufsize(ib)
    bufs = _Buffers(ctx.cd, max(slab, ib))
    clen = max(1, slab // ib)
    for a in range(o):
        for b in range(0, i, ib):
            s3 = (slice(a, a + 1), slice(None), slice(b, b + ib))
            _chunked(ctx, bufs, clen, x3[s3], out3[s3], part(where, s3), part(temp, s3))


def _bufsize(inner: int) -> None:
    """Keep NumPy from buffering a broadcast ``(rows, 1)`` operand (see the docstring)."""
    if MIN_BUFSIZE <= inner < np.getbufsize():
        np.setbufsize(inner // 16 * 16)


# --------------------------------------------------------------------------
# kernels


@dataclass(slots=True)
class _Special:
    """Slices whose maximum is not finite, in keepdims shape."""

    bad: np.ndarray  # maximum NaN or +-inf
    fin: np.ndarray
    m_safe: np.ndarray  # the maximum where finite, else 0
    pinf: np.ndarray | None  # maximum +inf (None: no such slice)
    nan: np.ndarray | None  # maximum NaN (None: no such slice)


def _special(m: np.ndarray) -> _Special | None:
    """``None`` when every maximum is finite (one reduction: their sum is)."""
    if math.isfinite(np.add.reduce(m, axis=None)):
        return None
    fin = np.isfinite(m)
    if fin.all():  # the sum overflowed
        return None
    pinf = m == _INF
    nan = np.isnan(m)
    return _Special(
        bad=~fin,
        fin=fin,
        m_safe=np.where(fin, m, 0),
        pinf=pinf if pinf.any() else None,
        nan=nan if nan.any() else None,
    )


# read-only helper vectors, made once: (length, dtype) -> ones, (rows, n) -> offsets
_ONES: dict[tuple[int, np.dtype], np.ndarray] = {}
_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


def _ones(n: int, dt: np.dtype) -> np.ndarray:
    ones = _ONES.get((n, dt))
    if ones is None:
        ones = np.ones(n, dt)
        ones.flags.writeable = False
        _ONES[n, dt] = ones
    return ones


def _offsets(rows: int, n: int) -> np.ndarray:
    """Flat index of each row's start in a C-ordered ``(rows, n)`` slab."""
    off = _OFFSETS.get((rows, n))
    if off is None:
        off = np.arange(0, rows * n, n)
        off.flags.writeable = False
        if len(_OFFSETS) > 256:  # many shapes: keep the cache small
            _OFFSETS.clear()
        _OFFSETS[rows, n] = off
    return off


def _load(
    ctx: _Ctx,
    xs: np.ndarray,
    ws: np.ndarray | None,
    ts: np.ndarray | None,
    dst: np.ndarray,
) -> np.ndarray:
    """``xs`` in the compute dtype, masked, negated and divided by temperature, into ``dst``.

    The order is the generic core's: mask (masked entries read ``-inf`` after
    any negation), negate, then divide the finite values by the temperature.
    """
    cd = ctx.cd
    if ctx.via is not None:
        with np.errstate(over="ignore"):  # overflow to +-inf is IEEE's rounding
            xs = xs.astype(ctx.via)  # a slab-sized copy
    if ws is not None:
        dst.fill(-_INF)
        if ctx.negate:
            np.negative(xs, out=dst, where=ws, dtype=cd, casting="unsafe")
        else:
            np.copyto(dst, xs, casting="unsafe", where=ws)
    elif ctx.negate:
        np.negative(xs, out=dst, dtype=cd, casting="unsafe")
    elif ctx.scalar_t is not None:
        # x / t keeps +-inf and NaN as they are: no need to pick finite values
        np.divide(xs, ctx.scalar_t, out=dst, dtype=cd, casting="unsafe")
        return dst
    else:
        np.copyto(dst, xs, casting="unsafe")
    if ctx.scalar_t is not None:
        np.divide(dst, ctx.scalar_t, out=dst)
    elif ts is not None:
        np.divide(dst, ts, out=dst, where=np.isfinite(dst), dtype=cd, casting="unsafe")
    return dst


def _max(
    cd: np.dtype, src: np.ndarray, rows: bool
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
    if m.dtype != cd:
        m = m.astype(cd)
    return m, flat


def _shift(
    ctx: _Ctx, src: np.ndarray, m: np.ndarray, sp: _Special | None, dst: np.ndarray
) -> None:
    """``z = src - m`` into ``dst`` (which may be ``src``), special slices rebuilt.

    As in the generic core: in a slice whose maximum is not finite, the
    ``+inf`` entries of a ``+inf`` slice become 0 and everything else ``-inf``.
    """
    if sp is None:
        np.subtract(src, m, out=dst, dtype=ctx.cd, casting="unsafe")
        return
    hit = None if sp.pinf is None else np.equal(src, _INF) & sp.pinf
    np.subtract(src, sp.m_safe, out=dst, dtype=ctx.cd, casting="unsafe")
    np.copyto(dst, -_INF, where=sp.bad)
    if hit is not None:
        np.copyto(dst, 0.0, where=hit)


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
            s = np.dot(e, _ones(n, e.dtype))
            return s[:, None]
        if n % BLOCK == 0:
            k = n // BLOCK
            part: np.ndarray = np.dot(e.reshape(r * k, BLOCK), _ones(BLOCK, e.dtype))
            if k <= BLOCK:
                s = np.dot(part.reshape(r, k), _ones(k, e.dtype))
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
    contiguous elementwise ``add`` (measured as fast as ``add.reduce`` or
    faster, much faster for narrow ``I``).
    """
    o, n, i = e.shape
    if n <= 2:
        return np.add.reduce(e, axis=1, keepdims=True)
    h = n // 2
    shape = (o, n - h, i)
    parts = np.empty(shape, e.dtype) if bufs is None else bufs.c(shape)
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


class _Pairwise:
    """Chunk sums added one by one and combined pairwise (a binary counter).

    A running total would add a rounding per chunk; this keeps the depth at
    ``log2(chunks)`` with ``log2(chunks)`` partial sums held.
    """

    __slots__ = ("_stack",)

    def __init__(self) -> None:
        self._stack: list[tuple[int, np.ndarray]] = []

    def add(self, s: np.ndarray) -> None:
        level = 0
        while self._stack and self._stack[-1][0] == level:
            s = self._stack.pop()[1] + s
            level += 1
        self._stack.append((level, s))

    def total(self) -> np.ndarray:
        _, s = self._stack[-1]
        for _, t in reversed(self._stack[:-1]):
            s = t + s
        return s


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
    ``out=`` a float16 array measured 7x slower than this copy.
    """
    if work is not ys:
        np.copyto(ys, work, casting="unsafe")


def _poison(sp: _Special | None, ys: np.ndarray, ws: np.ndarray | None) -> None:
    """NaN over the NaN slices, masked entries excepted."""
    if sp is None or sp.nan is None:
        return
    np.copyto(ys, np.nan, where=sp.nan if ws is None else sp.nan & ws)


def _lse(m: np.ndarray, sp: _Special | None, tail: np.ndarray, out: np.ndarray) -> None:
    if sp is None:
        val = m + np.log1p(tail)
    else:
        val = np.where(sp.fin, sp.m_safe + np.log1p(tail), m)
    np.copyto(out, val, casting="unsafe")


def _slab(
    ctx: _Ctx,
    bufs: _Buffers,
    xs: np.ndarray,
    ys: np.ndarray,
    ws: np.ndarray | None,
    ts: np.ndarray | None,
    *,
    rows: bool,
) -> None:
    """One slab that fits in cache: every pass runs while it is there.

    The finite formula runs first, unchecked: a slice whose maximum is +-inf
    makes ``inf - inf`` in the shift, which raises under the caller's
    ``invalid='raise'``, and the slab is then done again with the contract's
    special cases. A NaN slice needs no alarm: the finite formula fills it
    with NaN, which is the answer (masked inputs are checked explicitly, as
    their masked entries must stay 0 / ``-inf``).
    """
    try:
        _kernel(ctx, bufs, xs, ys, ws, ts, rows=rows, check=ws is not None)
    except FloatingPointError:
        with np.errstate(all="ignore"):
            _kernel(ctx, bufs, xs, ys, ws, ts, rows=rows, check=True)


def _kernel(
    ctx: _Ctx,
    bufs: _Buffers,
    xs: np.ndarray,
    ys: np.ndarray,
    ws: np.ndarray | None,
    ts: np.ndarray | None,
    *,
    rows: bool,
    check: bool,
) -> None:
    kind = ctx.kind
    direct = kind != "logsumexp" and ys.dtype == ctx.cd
    work = ys if direct else bufs.a(xs.shape)
    src = _load(ctx, xs, ws, ts, work) if ctx.load else xs
    m, flat = _max(ctx.cd, src, rows)
    sp = _special(m) if check else None
    _shift(ctx, src, m, sp, work)
    if kind == "softmax":
        np.exp(work, out=work)
        s = _sum(work, rows, bufs)
        if sp is not None:
            np.copyto(s, 1.0, where=s == 0.0)
        np.divide(work, s, out=work)
        _store(work, ys)
        _poison(sp, ys, ws)
        return
    e = bufs.b(xs.shape) if kind == "log_softmax" else work
    np.exp(work, out=e)
    tail = _tail(e, flat, rows, bufs)
    if kind == "log_softmax":
        np.subtract(work, np.log1p(tail), out=work)
        _store(work, ys)
        _poison(sp, ys, ws)
    else:
        _lse(m, sp, tail, ys)


def _chunked(
    ctx: _Ctx,
    bufs: _Buffers,
    clen: int,
    xb: np.ndarray,
    yb: np.ndarray,
    wb: np.ndarray | None,
    tb: np.ndarray | None,
) -> None:
    """A block whose slices are too long for one slab, in chunks along them.

    Three sweeps: the maximum; ``exp(z)`` and its sum (kept in the output when
    it can hold them); the scaling (recomputing ``exp`` where it could not).
    """
    with np.errstate(all="ignore"):  # slices are checked explicitly here
        _chunked_block(ctx, bufs, clen, xb, yb, wb, tb)


def _chunked_block(
    ctx: _Ctx,
    bufs: _Buffers,
    clen: int,
    xb: np.ndarray,
    yb: np.ndarray,
    wb: np.ndarray | None,
    tb: np.ndarray | None,
) -> None:
    kind, cd = ctx.kind, ctx.cd
    rows = xb.ndim == 2
    parts = [slice(j, j + clen) for j in range(0, xb.shape[1], clen)]
    direct = kind != "logsumexp" and yb.dtype == cd

    def source(s: slice, dst: np.ndarray) -> np.ndarray:
        xs = xb[:, s]
        if not ctx.load:
            return xs
        ws = None if wb is None else wb[:, s]
        ts = None if tb is None else tb[:, s]
        return _load(ctx, xs, ws, ts, dst)

    if ctx.load:
        m = np.full(xb[:, :1].shape, -_INF, cd)
        for s in parts:
            src = source(s, bufs.a(xb[:, s].shape))
            np.maximum(m, np.maximum.reduce(src, axis=1, keepdims=True), out=m)
    else:
        m = np.maximum.reduce(xb, axis=1, keepdims=True).astype(cd, copy=False)
    sp = _special(m)

    def shifted(s: slice, dst: np.ndarray) -> None:
        _shift(ctx, source(s, dst), m, sp, dst)

    acc = _Pairwise()
    for s in parts:
        shape = xb[:, s].shape
        work = yb[:, s] if direct else bufs.a(shape)
        shifted(s, work)
        e = bufs.b(shape) if (direct and kind == "log_softmax") else work
        np.exp(work, out=e)
        acc.add(_sum(e, rows, bufs))
    total = acc.total()
    if kind != "softmax":
        small = total < 2.0
        tail = total - 1.0
        if small.any():  # see _tail: sum again without the one maximum
            again = _Pairwise()
            for s in parts:
                e = bufs.a(xb[:, s].shape)
                shifted(s, e)
                np.exp(e, out=e)
                np.copyto(e, 0.0, where=(e == 1.0) & small)
                again.add(_sum(e, rows, bufs))
            tail = np.where(small, again.total(), tail)
        if kind == "logsumexp":
            _lse(m, sp, tail, yb)
            return
        total = np.log1p(tail)
    elif sp is not None:
        np.copyto(total, 1.0, where=total == 0.0)
    op = np.divide if kind == "softmax" else np.subtract
    if direct:  # one streaming pass over the block
        op(yb, total, out=yb)
        _poison(sp, yb, wb)
        return
    for s in parts:
        ys = yb[:, s]
        work = bufs.a(ys.shape)
        shifted(s, work)
        if kind == "softmax":
            np.exp(work, out=work)
        op(work, total, out=work)
        _store(work, ys)
        _poison(sp, ys, None if wb is None else wb[:, s])
