"""Dask: one pass for the slice summaries, one map over blocks for the output.

The generic core on Dask builds a dozen elementwise layers and two separate
reductions (the maximum, then the sum of the shifted ``exp``). Here a slice is
summarised by ``(m, s')``: its maximum and ``s' = S - 1``, with ``S`` the sum
of ``exp(x - m)``, kept without its leading 1 so that the log1p form of
logsumexp and log_softmax (``log1p(s')``) keeps its accuracy through the
combination. Summaries combine as the online normaliser does,
``S = S1 e^(m1 - M) + S2 e^(m2 - M)`` with ``M = max(m1, m2)``, written on the
side that holds ``M``::

    s' = s'1 + (1 + s'2) e^(m2 - M)        (m1 >= m2; e^0 = 1 for a tie)

so ``logsumexp([0, -40])`` split over two chunks is ``0 + log1p(e^-40)``. The
shift ``m2 - M`` is rounded in the compute dtype, as the one-pass formula
rounds ``x - M``. The special slices need no extra field: nothing left is
``(-inf, -1)`` (``1 + s' = 0``, the neutral element), k ``+inf`` entries are
``(+inf, k - 1)`` (``e^(finite - inf) = 0`` drops the finite parts, and two
``+inf`` sides add their counts), a NaN slice keeps its NaN maximum.

Reads. ``dask.array.reduction`` makes the summaries (one task per block, each
block's maximum and sum of ``exp`` in one visit, then a tree of combines), and
one ``map_blocks`` over the input and the broadcast summaries writes the
output: the input is read twice, logsumexp's once. When every reduced axis
lies in one chunk, each block holds whole slices, and one ``map_blocks`` runs
the NumPy path on each block: one read. Nothing is computed during a call.
Blocks must be NumPy arrays (``x._meta``); other block types, weights ``b``
and complex input go to the generic core.

Masks and temperatures are broadcast and rechunked to the input's chunks (the
output keeps them), then applied per block by the generic core's own NumPy
selects in one task. Summaries are float64; each block's ``exp`` runs in the
compute dtype, as the NumPy path's does. Block kernels work in slabs of a few
hundred KiB along the first axis (temporaries stay in cache) with the ufunc
buffer no longer than a slice (NumPy's default buffer doubles the time of
``x - m`` against ``(rows, 1)`` maxima); special slices (a maximum that is not
finite) take the generic core's rebuild of ``x - m`` only in the blocks that
hold one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import _generic
from .. import _kernels as kernels
from .._call import Call
from .._compat import dtype_kind

__all__ = ["run", "run_generic"]

# a slice's summary: its maximum and s' = sum(exp(x - m)) - 1
STATS = np.dtype([("m", np.float64), ("s", np.float64)])

_INF = math.inf


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)``'s answer as a lazy Dask array, or ``NotImplemented``."""
    if _has_empty_chunk(call):
        # what this path declines, the generic core gets on the rechunked arrays
        call = _without_empty_chunks(call)
        out = _run(kind, call, **opts)
        return run_generic(kind, call, **opts) if out is NotImplemented else out
    return _run(kind, call, **opts)


def run_generic(kind: str, call: Call, **opts: Any) -> Any:
    """The generic core, on arrays without zero-length chunks.

    Dask's own reductions fail on a zero-length chunk (its ``max`` has no
    identity there, and its partial reductions do not concatenate), so such
    chunks are dropped first: a rechunk, computed lazily like the rest.
    """
    if _has_empty_chunk(call):
        call = _without_empty_chunks(call)
    return getattr(_generic, kind)(call, **opts)


def _arrays(call: Call) -> dict[str, Any]:
    """The Dask arrays of a call, by field."""
    fields = {
        "x": call.x,
        "b": call.b,
        "where": call.where,
        "temperature": call.temperature,
    }
    return {k: a for k, a in fields.items() if hasattr(a, "chunks")}


def _has_empty_chunk(call: Call) -> bool:
    if call.empty:
        return False
    return any(
        0 in c and n > 0
        for a in _arrays(call).values()
        for c, n in zip(a.chunks, a.shape, strict=True)
    )


def _without_empty_chunks(call: Call) -> Call:
    def drop(a: Any) -> Any:
        chunks = tuple(tuple(n for n in c if n) or c for c in a.chunks)
        return a if chunks == a.chunks else a.rechunk(chunks)

    return dataclasses.replace(call, **{k: drop(a) for k, a in _arrays(call).items()})


def _run(kind: str, call: Call, **opts: Any) -> Any:
    x = call.x
    if (
        call.empty
        or not call.axes
        or call.b is not None
        or dtype_kind(call.xp, call.compute_dtype) != "real floating"
        or type(getattr(x, "_meta", None)) is not np.ndarray
        or tuple(x.shape) != call.shape
        or not all(
            _known_chunks(a) for a in (x, call.where, call.temperature) if a is not None
        )
    ):
        return NotImplemented
    call = _aligned(call)
    if kind == "logsumexp":
        return _logsumexp(call, **opts)
    if all(len(x.chunks[i]) == 1 for i in call.axes):
        return _per_block(kind, call, **opts)
    return _two_pass(kind, call, **opts)


def _known_chunks(a: Any) -> bool:
    """Whether every chunk length of a Dask array is known (floats pass)."""
    chunks = getattr(a, "chunks", ())
    return not any(math.isnan(n) for c in chunks for n in c)


# ---------------------------------------------------------------------------
# Graph construction


def _aligned(call: Call) -> Call:
    """``where`` and an array temperature broadcast to ``x``'s shape, in ``x``'s chunks."""
    x = call.x

    def align(a: Any) -> Any:
        da = _dask_array()

        lead = x.ndim - a.ndim
        # dims that are not broadcast take x's chunks first (broadcast_to
        # rechunks only the new and length-1 dims)
        target = tuple(
            (1,) if n == 1 else x.chunks[lead + i] for i, n in enumerate(a.shape)
        )
        if a.chunks != target:
            a = a.rechunk(target)
        return da.broadcast_to(a, x.shape, chunks=x.chunks)

    t = call.temperature
    return dataclasses.replace(
        call,
        where=None if call.where is None else align(call.where),
        temperature=t if t is None or isinstance(t, float) else align(t),
    )


def _dask_array() -> Any:
    """``dask.array`` (imported here: Dask arrays exist, so Dask is imported already)."""
    import dask.array

    return dask.array


def _meta(ndim: int, dtype: Any) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dtype)


def _per_block(kind: str, call: Call, *, negate: bool = False) -> Any:
    """Every slice lies in one block: the NumPy path on each block, one read."""
    from .. import _api

    if kind == "log_softmax":
        fn = _api.log_softmax
    else:
        fn = _api.softmin if negate else _api.softmax
    args: list[Any] = [call.x]
    has_where = call.where is not None
    t = call.temperature
    has_t = t is not None and not isinstance(t, float)
    if has_where:
        args.append(call.where)
    if has_t:
        args.append(t)
    block = functools.partial(
        _block_call,
        fn=fn,
        axes=call.axes,
        dtype=call.out_dtype,
        has_where=has_where,
        temperature=t if isinstance(t, float) else None,
    )
    return _map_blocks(
        block,
        *args,
        dtype=call.out_dtype,
        meta=_meta(call.x.ndim, call.out_dtype),
        token=f"softmax-xp-{kind}",
    )


def _two_pass(kind: str, call: Call, *, negate: bool = False) -> Any:
    """Slices span several blocks: the summaries, then the output from them."""
    u = _prepared(call, negate=negate)
    stats = _summaries(u, call.axes)
    args: list[Any] = [u, stats]
    if call.where is not None:
        args.append(call.where)
    block = functools.partial(
        _block_output,
        axes=call.axes,
        log=kind == "log_softmax",
        out_dtype=call.out_dtype,
        has_where=call.where is not None,
    )
    return _map_blocks(
        block,
        *args,
        dtype=call.out_dtype,
        meta=_meta(u.ndim, call.out_dtype),
        token=f"softmax-xp-{kind}",
    )


def _prepared(call: Call, *, negate: bool) -> Any:
    """The input masked, negated and tempered, in the compute dtype: one task per block."""
    x, t = call.x, call.temperature
    if call.where is None and t is None and not negate:
        x = _nominal(call)
        return x if x.dtype == call.compute_dtype else x.astype(call.compute_dtype)
    args: list[Any] = [x]
    has_where = call.where is not None
    has_t = t is not None and not isinstance(t, float)
    if has_where:
        args.append(call.where)
    if has_t:
        args.append(t)
    # the block's own Call: the generic selects then run on NumPy blocks
    block = functools.partial(
        _block_inputs,
        template=dataclasses.replace(
            call, x=None, where=None, temperature=None, xp=_numpy_namespace()
        ),
        has_where=has_where,
        temperature=t if isinstance(t, float) else None,
        negate=negate,
    )
    return _map_blocks(
        block,
        *args,
        dtype=call.compute_dtype,
        meta=_meta(x.ndim, call.compute_dtype),
        token="softmax-xp-inputs",
    )


def _nominal(call: Call) -> Any:
    """``x`` rounded to a narrowing ``dtype=`` first (half outputs included).

    As the generic core does, even where the work is wider (float32
    logsumexp in float64): values beyond the range become +-inf.
    """
    x = call.x
    nominal = np.dtype(call.out_dtype)
    if call.func.startswith("logsumexp") and nominal.itemsize < 4:
        nominal = np.dtype(np.float32)  # as the generic core: see _to_compute
    if x.dtype == nominal or np.can_cast(x.dtype, nominal):
        return x
    return _map_blocks(
        functools.partial(kernels.round_to, _numpy_namespace(), dtype=nominal),
        x,
        dtype=nominal,
        meta=_meta(x.ndim, nominal),
        token="softmax-xp-nominal",
    )


def _map_blocks(fn: Any, *args: Any, token: str, **kwargs: Any) -> Any:
    """``dask.array.map_blocks`` with keys ``<token>-<hash of the call>``.

    Our prefix names the layer in a graph, the hash keeps two outputs apart;
    ``map_blocks(token=)`` itself is deprecated in the Dask versions we support.
    """
    from dask.base import tokenize

    name = f"{token}-{tokenize(fn, *args, **kwargs)}"
    return _dask_array().map_blocks(fn, *args, name=name, **kwargs)


def _numpy_namespace() -> Any:
    from .._compat import array_namespace

    return array_namespace(np.empty(0))


def _summaries(u: Any, axes: tuple[int, ...]) -> Any:
    """The ``(m, s')`` summary of every slice (keepdims), as a structured array."""
    da = _dask_array()

    combine = functools.partial(_combine_summaries, shift_dtype=u.dtype)
    return da.reduction(
        u,
        _chunk_summary,
        combine,
        combine=combine,
        axis=axes,
        keepdims=True,
        dtype=STATS,
        concatenate=False,
        meta=_meta(u.ndim, STATS),
        name="softmax-xp-summary",
    )


def _logsumexp(call: Call, *, keepdims: bool, return_sign: bool) -> Any:
    da = _dask_array()

    x = call.x
    # with the sign, the value stays in the compute dtype until the sign is
    # taken: that of the exact total, even where the value rounds to -inf
    rd = call.compute_dtype if return_sign else call.out_dtype
    meta = _meta(x.ndim, rd)
    if all(len(x.chunks[i]) == 1 for i in call.axes):
        # whole slices in each block: the NumPy path per block
        from .. import _api

        xn = _nominal(call)  # then computed in rd, which holds it exactly
        args = [xn] if call.where is None else [xn, call.where]
        lse = _map_blocks(
            functools.partial(
                _block_lse_call,
                fn=_api.logsumexp,
                axes=call.axes,
                dtype=rd,
            ),
            *args,
            chunks=tuple((1,) if i in call.axes else c for i, c in enumerate(x.chunks)),
            dtype=rd,
            meta=meta,
            token="softmax-xp-logsumexp",
        )
    else:
        stats = _summaries(_prepared(call, negate=False), call.axes)
        lse = _map_blocks(
            _block_logsumexp,
            stats,
            out_dtype=rd,
            dtype=rd,
            meta=meta,
            token="softmax-xp-logsumexp",
        )
    if not keepdims:
        lse = da.squeeze(lse, axis=call.axes)
    if not return_sign:
        return lse
    od = call.out_dtype
    # unweighted: -inf exactly where nothing is left, NaN with NaN, else 1
    sign = da.map_blocks(
        _sign_of, lse, out_dtype=od, dtype=od, meta=_meta(lse.ndim, od)
    )
    if rd != od:
        lse = da.map_blocks(
            _round_block, lse, out_dtype=od, dtype=od, meta=_meta(lse.ndim, od)
        )
    return lse, sign


# ---------------------------------------------------------------------------
# Block kernels (NumPy)


def _block_call(
    *blocks: Any,
    fn: Any,
    axes: tuple[int, ...],
    dtype: Any,
    has_where: bool,
    temperature: float | None,
) -> Any:
    x = blocks[0]
    where = blocks[1] if has_where else None
    t = blocks[1 + has_where] if len(blocks) > 1 + has_where else temperature
    return fn(x, axis=axes, where=where, temperature=t, dtype=dtype)


def _block_lse_call(
    x: Any, where: Any = None, *, fn: Any, axes: tuple[int, ...], dtype: Any
) -> Any:
    return fn(x, axis=axes, where=where, keepdims=True, dtype=dtype)


def _block_inputs(
    *blocks: Any,
    template: Call,
    has_where: bool,
    temperature: float | None,
    negate: bool,
) -> Any:
    x = blocks[0]
    where = blocks[1] if has_where else None
    t = blocks[1 + has_where] if len(blocks) > 1 + has_where else temperature
    call = dataclasses.replace(
        template, x=x, where=where, temperature=t, shape=tuple(x.shape)
    )
    return kernels.inputs(call, negate=negate)


def _chunk_summary(
    u: np.ndarray,
    axis: tuple[int, ...],
    keepdims: bool,  # noqa: ARG001 - dask passes it; the summary always keeps dims
    **_: Any,
) -> np.ndarray:
    """``(m, s')`` of every slice of one block (``keepdims`` shape)."""
    shape = tuple(1 if i in axis else n for i, n in enumerate(u.shape))
    out = np.empty(shape, dtype=STATS)
    if u.size == 0:  # Dask's metadata probes; a real block is never empty here
        out["m"], out["s"] = -_INF, -1.0
        return out
    with _ufuncs(u, axis):
        m = np.max(u, axis=axis, keepdims=True)
        if np.isfinite(m).all():
            s = np.empty(shape, dtype=np.float64)
            buf = np.empty_like(u[_slabs(u, axis)[0]])
            for sl in _slabs(u, axis):
                e = buf[: u[sl].shape[0]] if sl != slice(None) else buf
                np.subtract(u[sl], m[sl], out=e)  # overflow to -inf, as IEEE rounds
                np.exp(e, out=e)
                total = _sum(e, axis)
                part = total.astype(np.float64) - 1.0
                # S - 1 keeps s' accurate once S >= 2; below, the slice has a
                # single exp equal to 1 (its maximum): the others are summed alone
                low = total < 2
                if low.any():
                    rest = _sum(np.where(e == 1, 0, e), axis)
                    part = np.where(low, rest.astype(np.float64), part)
                s[sl] = part
        else:
            s = _special_summary(u, m, axis)
    out["m"] = m
    out["s"] = s
    return out


def _sum(e: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """Sums over ``axis`` (keepdims), pairwise along every axis.

    NumPy's own sum is pairwise only along a contiguous inner loop; along any
    other axis it adds row after row, an error growing like the length.
    Such an axis is halved instead, the two halves added elementwise, until
    one row is left (``log2(n)`` roundings deep, as many additions).
    """
    for a in sorted(axis, key=lambda a: e.strides[a]):
        n = e.shape[a]
        if e.strides[a] == e.itemsize or n <= 2:
            e = np.add.reduce(e, axis=a, keepdims=True)
            continue
        parts = np.moveaxis(e, a, 0)
        h = n // 2
        acc = parts[: n - h].copy()  # pairs are added into it
        np.add(acc[:h], parts[n - h :], out=acc[:h])  # the odd middle row waits
        k = n - h
        while k > 1:
            h = k // 2
            np.add(acc[:h], acc[k - h : k], out=acc[:h])
            k -= h
        e = np.moveaxis(acc[:1], 0, a)
    return e


# bytes of a block handled at once: the slab and its buffer stay in cache
SLAB_BYTES = 1 << 18


def _slabs(u: np.ndarray, axis: tuple[int, ...]) -> list[slice]:
    """Runs of the first axis small enough for the cache (the whole block if it is reduced)."""
    if 0 in axis or u.ndim < 2 or u.nbytes <= SLAB_BYTES:
        return [slice(None)]
    step = max(1, SLAB_BYTES // max(1, u[0].nbytes))
    return [slice(i, i + step) for i in range(0, u.shape[0], step)]


@contextlib.contextmanager
def _ufuncs(u: np.ndarray, axis: tuple[int, ...]) -> Iterator[None]:
    """IEEE results without warnings, and a ufunc buffer no longer than a slice's run.

    With NumPy's default buffer (8192 elements), ``x - m`` against the
    ``(rows, 1)`` maxima goes through the buffers and is about twice as slow.
    Both settings are NumPy's per-thread (context) state.
    """
    run = math.prod(u.shape[i] for i in range(u.ndim) if i >= min(axis))
    old = np.getbufsize()
    if run >= 64 and all(i in axis for i in range(min(axis), u.ndim)):
        np.setbufsize(min(8192, run // 16 * 16))
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            yield
    finally:
        np.setbufsize(old)


def _special_summary(u: np.ndarray, m: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """``s'`` of a block with a slice whose maximum is not finite (the generic rebuild of z)."""
    z = _rebuilt_shift(u, m)
    e = np.exp(z)
    is_max = z == 0
    k = np.sum(is_max, axis=axis, keepdims=True, dtype=np.float64)  # exact
    rest = _sum(np.where(is_max, 0, e).astype(np.float64), axis)
    return np.where(k > 0, rest + (k - 1.0), -1.0)


def _rebuilt_shift(u: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``u - m`` where ``m`` is finite; on the other slices the generic core's rebuild.

    ``+inf`` entries of a ``+inf`` slice become 0, everything else ``-inf``
    (NaN slices are re-poisoned from ``m`` later). Stays in ``u``'s dtype.
    """
    zero = np.zeros((), dtype=u.dtype)
    ninf = np.full((), -_INF, dtype=u.dtype)
    finite = np.isfinite(m)
    special = np.where((u == m) & (m > zero), zero, ninf)
    return np.where(finite, u - np.where(finite, m, zero), special)


def _flatten(parts: Any) -> list[np.ndarray]:
    """The summaries of ``dask.array.reduction(concatenate=False)``: nested lists, one level per axis."""
    if isinstance(parts, list):
        return [leaf for p in parts for leaf in _flatten(p)]
    return [parts]


def _combine_summaries(
    parts: Any,
    axis: tuple[int, ...],  # noqa: ARG001 - dask passes it; the parts are aligned
    keepdims: bool,  # noqa: ARG001 - always kept
    shift_dtype: Any,
    **_: Any,
) -> np.ndarray:
    """One summary from several; the order does not matter (the combination is commutative)."""
    leaves = _flatten(parts)
    # pairwise, as the sums within a block: log2(len) roundings deep
    while len(leaves) > 1:
        pairs = zip(leaves[::2], leaves[1::2], strict=False)
        merged = [_combine(a, b, shift_dtype) for a, b in pairs]
        leaves = merged + leaves[len(merged) * 2 :]
    return leaves[0]


def _combine(a: np.ndarray, b: np.ndarray, shift_dtype: Any) -> np.ndarray:
    m1, s1, m2, s2 = a["m"], a["s"], b["m"], b["s"]
    with np.errstate(invalid="ignore", over="ignore"):
        big = np.maximum(m1, m2)  # NaN propagates
        # e^(m_i - M), the shift rounded in the compute dtype as the one-pass
        # formula rounds x - M (for a block's maxima it is that very shift);
        # 1 when m_i == M (also for +-inf, where m_i - M is NaN)
        top = big.astype(shift_dtype)
        # no inf - inf is formed (NumPy 1.x warned of it from Dask's threads
        # even under errstate): a non-finite M leaves factors of 0 or 1
        fin = np.isfinite(top)
        top = np.where(fin, top, 0.0).astype(shift_dtype)
        d1 = np.where(fin, np.subtract(m1.astype(shift_dtype), top), -_INF)
        d2 = np.where(fin, np.subtract(m2.astype(shift_dtype), top), -_INF)
        f1 = np.where(m1 == big, 1.0, np.exp(d1.astype(np.float64)))
        f2 = np.where(m2 == big, 1.0, np.exp(d2.astype(np.float64)))
        s = np.where(m1 >= m2, s1 + (1.0 + s2) * f2, s2 + (1.0 + s1) * f1)
        s = np.where(np.isnan(big), big, s)  # NaN slices keep a NaN sum
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=STATS)
    out["m"] = big
    out["s"] = s
    return out


def _block_output(
    *blocks: Any, log: bool, out_dtype: Any, has_where: bool, axes: tuple[int, ...]
) -> Any:
    """softmax or log_softmax of one block from its slices' summaries."""
    u, stats = blocks[0], blocks[1]
    where = blocks[2] if has_where else None
    m = stats["m"].astype(u.dtype)  # exact: m is an element of u
    s = stats["s"]
    with _ufuncs(u, axes):
        if np.isfinite(m).all():
            out = np.empty(u.shape, dtype=u.dtype)
            if log:
                shift = np.log1p(s).astype(u.dtype)
            else:
                total = (1.0 + s).astype(u.dtype)
            for sl in _slabs(u, axes):
                o = out[sl]
                np.subtract(u[sl], m[sl], out=o)
                if log:
                    np.subtract(o, shift[sl], out=o)
                else:
                    np.exp(o, out=o)
                    np.divide(o, total[sl], out=o)
        else:
            z = _rebuilt_shift(u, m)
            total = (1.0 + s).astype(u.dtype)  # k on a +inf slice, 0 with nothing left
            if log:
                out = z - np.log1p(np.where(total > 0, s, 0)).astype(u.dtype)
            else:
                # 1 with nothing left and on NaN slices (re-poisoned below)
                out = np.exp(z) / np.where(total > 0, total, 1)
            out = kernels.poison(_numpy_namespace(), m, out, where)
    return kernels.round_to(_numpy_namespace(), out, out_dtype)


def _block_logsumexp(stats: np.ndarray, out_dtype: Any) -> Any:
    m, s = stats["m"], stats["s"]
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(np.isfinite(m), m + np.log1p(np.where(np.isfinite(m), s, 0)), m)
    return kernels.round_to(_numpy_namespace(), lse, out_dtype)


def _sign_of(lse: np.ndarray, out_dtype: Any) -> np.ndarray:
    sign = np.array(lse > -_INF, dtype=out_dtype)
    np.copyto(sign, np.nan, where=np.isnan(lse))
    return sign


def _round_block(lse: np.ndarray, out_dtype: Any) -> Any:
    return kernels.round_to(_numpy_namespace(), lse, out_dtype)
