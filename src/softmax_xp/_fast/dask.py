"""Dask: the NumPy path per block, or the streaming normaliser across chunks.

When every reduced axis lies in one chunk, each block holds whole slices: one
blockwise layer hands every block, as its own :class:`~softmax_xp._call.Call`,
to the NumPy fast path (the generic core where that declines), under
``_parallel.serial()``: Dask runs the blocks in parallel, and the NumPy
path's own thread pool inside each would oversubscribe the cores. The input
is read once, and the graph is that of ``map_blocks(np.exp)`` over the same
input: one task per block, which Dask's optimiser fuses with the task making
the block.

Graph construction is kept cheap: layers are built with
``dask.array.blockwise`` (``map_blocks`` inspects the task's signature three
times), with the meta given (no dummy run of the kernel) and a name hashed
from the input arrays' names and the call's parameters (``tokenize`` of the
task would pickle its template ``Call``): 0.2 ms to build a softmax of 8
blocks instead of 0.5 ms, as long as ``map_blocks(np.exp)`` takes.

When slices span chunks, each slice is summarised by the streaming
normaliser's ``(m, rest)`` state (see ``_streaming``): one task per block
makes the states of its parts of the slices, ``dask.array.reduction`` merges
them in a tree (``_kernels.merge_states``), and one ``map_blocks`` over the
input and the broadcast states writes the output as ``softmax_from_state``
does: the input is read twice, logsumexp's once (``_kernels.lse_from_state``
on the states alone). Nothing is computed during a call.

Blocks must be NumPy arrays (``x._meta``); weights ``b``, complex input and
unknown chunk lengths go to the generic core. Masks and array temperatures
are broadcast and rechunked to ``x``'s chunks, so that a block's mask and
temperature arrive with it. States are held in the call's compute dtype.
Within a block, slices whose maximum is finite (all but the rare special
ones) take the plain shift ``x - m``; a block with a special slice takes the
shared kernels' rebuild (``_kernels.shift``).
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
from .._compat import array_namespace, dtype_kind
from . import numpy as numpy_path
from ._parallel import serial

__all__ = ["run", "run_generic"]

_INF = math.inf
# bytes of a block's first axis taken at once by the finite hot loop
SLAB_BYTES = 1 << 18


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)``'s answer as a lazy Dask array, or ``NotImplemented``."""
    dropped = _without_empty_chunks(call)
    out = _run(kind, dropped, **opts)
    if out is NotImplemented and dropped is not call:
        # what this path declines, the generic core gets on the rechunked arrays
        return getattr(_generic, kind)(dropped, **opts)
    return out


def run_generic(kind: str, call: Call, **opts: Any) -> Any:
    """The generic core, on arrays without zero-length chunks."""
    return getattr(_generic, kind)(_without_empty_chunks(call), **opts)


def _arrays(call: Call) -> dict[str, Any]:
    """The Dask arrays of a call, by field."""
    fields = ("x", "b", "where", "temperature")
    return {k: getattr(call, k) for k in fields if hasattr(getattr(call, k), "chunks")}


def _without_empty_chunks(call: Call) -> Call:
    """``call`` itself, or with its zero-length chunks dropped (a lazy rechunk).

    Dask's own reductions fail on a zero-length chunk (its ``max`` has no
    identity there, and its partial reductions do not concatenate).
    """
    dropped = {}
    for k, a in _arrays(call).items():
        chunks = tuple(tuple(n for n in c if n) or c for c in a.chunks)
        if chunks != a.chunks:
            dropped[k] = a.rechunk(chunks)
    return dataclasses.replace(call, **dropped) if dropped else call


def _run(kind: str, call: Call, **opts: Any) -> Any:
    x = call.x
    if (
        call.empty
        or not call.axes
        or call.b is not None
        or dtype_kind(call.xp, call.compute_dtype) != "real floating"
        or type(getattr(x, "_meta", None)) is not np.ndarray
        or tuple(x.shape) != call.shape
        # unknown chunk lengths (NaN)
        or any(math.isnan(sum(c)) for a in _arrays(call).values() for c in a.chunks)
    ):
        return NotImplemented
    call = _aligned(call)
    if all(len(x.chunks[i]) == 1 for i in call.axes):
        return _per_block(kind, call, **opts)
    if kind == "logsumexp":
        return _logsumexp_from_states(call, **opts)
    return _from_states(kind, call, **opts)


# ---------------------------------------------------------------------------
# Graph construction


def _aligned(call: Call) -> Call:
    """``where`` and an array temperature broadcast to ``x``'s shape, in ``x``'s chunks."""
    x, t = call.x, call.temperature

    def align(a: Any) -> Any:
        # dims that are not broadcast take x's chunks first (broadcast_to
        # rechunks only the new and length-1 dims)
        own = x.chunks[x.ndim - a.ndim :]
        target = zip(a.shape, own, strict=True)
        a = a.rechunk(tuple((1,) if n == 1 else c for n, c in target))
        return _dask_array().broadcast_to(a, x.shape, chunks=x.chunks)

    where = None if call.where is None else align(call.where)
    t = align(t) if hasattr(t, "chunks") else t
    return dataclasses.replace(call, where=where, temperature=t)


def _dask_array() -> Any:
    """``dask.array`` (imported here: Dask arrays exist, so Dask is imported already)."""
    import dask.array

    return dask.array


def _map_blocks(
    fn: Any,
    *args: Any,
    name: str,
    dtype: Any,
    chunks: tuple[tuple[int, ...], ...] | None = None,
    new_axis: bool = False,
) -> Any:
    """One ``dask.array.blockwise`` layer of ``fn`` over blocks of ``x``'s grid.

    ``args`` are Dask arrays of ``x``'s number of dimensions, in ``x``'s
    chunks or with one chunk along an axis (broadcast to every block there);
    ``chunks`` gives the output's when they differ from the first argument's,
    ``new_axis`` adds one trailing axis of length ``chunks[-1]``. What
    ``map_blocks`` would add is left out: it inspects ``fn``'s signature
    three times and, without a name, hashes ``fn`` (with its template
    ``Call``); ``name`` is given, and the meta (no dummy run of the kernel).
    """
    ind = tuple(range(args[0].ndim))
    out_ind = (*ind, len(ind)) if new_axis else ind
    new_axes = {len(ind): chunks[-1]} if new_axis and chunks else None
    adjust = dict(zip(out_ind, chunks, strict=True)) if chunks else None
    return _dask_array().blockwise(
        fn,
        out_ind,
        *[p for a in args for p in (a, ind)],
        name=name,
        dtype=dtype,
        meta=np.empty((0,) * len(out_ind), dtype=dtype),
        adjust_chunks=adjust,
        new_axes=new_axes,
        concatenate=True,
        align_arrays=False,
    )


def _name(prefix: str, call: Call, *arrays: Any, **params: Any) -> str:
    """``<prefix>-<hash>`` of the input arrays' names and the call's parameters.

    Our prefix names the layer in a graph, the hash keeps two outputs apart
    (``softmax(x)`` and ``softmax(0.5 * x)``; two temperatures). A Dask
    array's token is its name, so nothing here hashes data, nor the task's
    function with its template ``Call`` (``tokenize`` pickles a dataclass).
    """
    from dask.base import tokenize

    t = call.temperature
    token = tokenize(
        [a.name for a in arrays],
        call.func,
        call.axes,
        None if hasattr(t, "chunks") else t,
        str(call.out_dtype),
        str(call.compute_dtype),
        params,
    )
    return f"{prefix}-{token}"


@functools.cache
def _numpy_namespace() -> Any:
    return array_namespace(np.empty(0))


def _blockwise(
    call: Call, fn: Any, prefix: str, **kwargs: Any
) -> tuple[Any, list[Any], str]:
    """A task running ``fn(block_call, ...)``, the Dask arrays it is mapped over,
    and its layer's name."""
    t = call.temperature
    t_array = hasattr(t, "chunks")
    template = dataclasses.replace(
        call,
        x=None,
        where=None,
        temperature=None if t_array else t,
        xp=_numpy_namespace(),
    )
    where = call.where is not None
    task = functools.partial(
        _on_block, fn, template, where=where, t_array=t_array, kwargs=kwargs
    )
    arrays = [a for a in (call.x, call.where, t) if hasattr(a, "chunks")]
    return task, arrays, _name(prefix, call, *arrays, fn=fn.__name__, **kwargs)


def _on_block(
    fn: Any, template: Call, *blocks: Any, where: bool, t_array: bool, kwargs: Any
) -> Any:
    """``fn`` on the Call of one block (``x``, then its mask and temperature when
    they are arrays); the blocks after those are passed on.

    Serially: Dask runs the blocks in parallel, a thread pool of the NumPy path
    inside each block would oversubscribe the cores.
    """
    x, n = blocks[0], 1 + where + t_array
    call = dataclasses.replace(
        template,
        x=x,
        where=blocks[1] if where else None,
        temperature=blocks[n - 1] if t_array else template.temperature,
        shape=x.shape,
    )
    with serial():
        return fn(call, *blocks[n:], **kwargs)


def _reduced_chunks(call: Call, n: int = 0) -> tuple[tuple[int, ...], ...]:
    """``x``'s chunks with the reduced axes in ``n`` chunks of 1 each (``n=0``: as many as ``x``'s)."""
    chunks = enumerate(call.x.chunks)
    return tuple((1,) * (n or len(c)) if i in call.axes else c for i, c in chunks)


def _per_block(kind: str, call: Call, **opts: Any) -> Any:
    """Every slice lies in one block: the NumPy path on each block, one read.

    One layer over ``x``'s blocks (with the mask's and temperature's when
    they are arrays), which Dask's optimiser fuses with the tasks making
    ``x``'s blocks: nothing is added to a ``map_blocks(np.exp)``.
    """
    # named by the public function (softmin runs softmax with negate)
    prefix = f"softmax-xp-{call.func if kind != 'logsumexp' else kind}"
    if kind != "logsumexp":
        fn, args, name = _blockwise(call, _block_run, prefix, kind=kind, opts=opts)
        return _map_blocks(fn, *args, name=name, dtype=call.out_dtype)
    block_opts = {"keepdims": True, "return_sign": opts["return_sign"]}
    fn, args, name = _blockwise(call, _block_run, prefix, kind=kind, opts=block_opts)
    return _logsumexp(fn, args, name, call, **opts)


def _logsumexp(
    fn: Any, args: Any, name: str, call: Call, *, keepdims: bool, return_sign: bool
) -> Any:
    """logsumexp (and its sign) from ``fn``'s keepdims blocks; with the sign, pairs on a last axis."""
    chunks = _reduced_chunks(call, 1)
    # with the sign, each block holds (lse, sign) pairs along a new last axis
    if return_sign:
        chunks = (*chunks, (2,))
    out = _map_blocks(
        fn, *args, name=name, dtype=call.out_dtype, chunks=chunks, new_axis=return_sign
    )
    parts = (out[..., 0], out[..., 1]) if return_sign else (out,)
    if not keepdims:
        parts = tuple(_dask_array().squeeze(p, axis=call.axes) for p in parts)
    return parts if return_sign else parts[0]


def _states(call: Call, *, negate: bool = False) -> Any:
    """The merged ``(m, rest)`` state of every slice (keepdims), as a structured array."""
    dtype = np.dtype([("m", call.compute_dtype), ("rest", call.compute_dtype)])
    state = "softmax-xp-state"
    fn, args, name = _blockwise(call, _block_state, state, negate=negate, dtype=dtype)
    parts = _map_blocks(fn, *args, name=name, dtype=dtype, chunks=_reduced_chunks(call))
    merge = functools.partial(_merge_states, dtype=dtype)
    return _dask_array().reduction(
        parts,
        _as_is,
        merge,
        combine=merge,
        axis=call.axes,
        keepdims=True,
        dtype=dtype,
        concatenate=False,
        meta=parts._meta,
        name="softmax-xp-summary",
    )


def _from_states(kind: str, call: Call, *, negate: bool = False) -> Any:
    """Slices span several blocks: their states, then the output from them."""
    states = _states(call, negate=negate)
    log = kind != "softmax"
    fn, args, name = _blockwise(
        call, _block_from_state, f"softmax-xp-{call.func}", negate=negate, log=log
    )
    return _map_blocks(fn, *args, states, name=name, dtype=call.out_dtype)


def _logsumexp_from_states(call: Call, **opts: Any) -> Any:
    sign = opts["return_sign"]
    finish = functools.partial(_block_finish, out_dtype=call.out_dtype, sign=sign)
    states = _states(call)
    name = _name("softmax-xp-logsumexp", call, states, fn="finish", sign=sign)
    return _logsumexp(finish, [states], name, call, **opts)


# ---------------------------------------------------------------------------
# Block tasks (NumPy)


def _block_run(call: Call, *, kind: str, opts: Any) -> Any:
    """``kind`` of one block of whole slices: the NumPy path, else the generic core."""
    out = numpy_path.run(kind, call, **opts)
    if out is NotImplemented:
        out = getattr(_generic, kind)(call, **opts)
    return np.stack(out, axis=-1) if isinstance(out, tuple) else out


def _block_state(call: Call, *, negate: bool, dtype: np.dtype) -> np.ndarray:
    """The ``(m, rest)`` state of each slice's part in one block (keepdims)."""
    xp, axes = call.xp, call.axes
    u = kernels.inputs(call, negate=negate)
    with _ufuncs(u, axes):
        m = np.max(u, axis=axes, keepdims=True)
        if np.isfinite(m).all():
            rest = _finite_rest(xp, u, m, axes)
        else:
            sh = kernels.shift(xp, u, axes, m)
            rest = kernels.state_rest(xp, sh, *kernels.log1p_tail(xp, sh, axes))
    return _pack(m, rest, dtype)


def _finite_rest(xp: Any, u: np.ndarray, m: np.ndarray, axes: Any) -> Any:
    """``rest = S - 1`` of slices whose maximum is finite, ``S`` the sum of ``exp(u - m)``.

    The finite hot loop. ``S - 1`` is within 2 eps of ``s'`` once ``S >= 2``;
    a block with a slice below (one maximum outweighs the rest) takes the
    shared log1p tail, which keeps the maxima out of the sum. The shared tail
    on every block measured several times this function's cost
    (docs/performance.md, "Dask: the tail of a block's state").
    """
    total = np.empty(m.shape, dtype=u.dtype)
    # slabs of a few hundred KiB: exp and the sum run while they are in cache
    step = max(1, SLAB_BYTES // max(1, u[0].nbytes)) if 0 not in axes else len(u)
    for i in range(0, len(u), step):
        e = np.subtract(u[i : i + step], m[i : i + step])
        total[i : i + step] = _sum(xp, np.exp(e, out=e), axes)
    if (total >= 2).all():
        return total - 1
    z = np.subtract(u, m)
    sh = kernels.Shifted(m=m, m_safe=m, m_special=m, z=z, e=np.exp(z))
    return kernels.log1p_tail(xp, sh, axes)[1]


def _sum(xp: Any, e: np.ndarray, axes: tuple[int, ...]) -> Any:
    """Sums over ``axes`` (keepdims): NumPy's own along the contiguous axis, where it
    is pairwise, and the shared pairwise halving along the others."""
    inner = tuple(a for a in axes if e.strides[a] == e.itemsize)[:1]
    if inner:
        e = np.sum(e, axis=inner, keepdims=True)
    return kernels.pairwise_sum(xp, e, tuple(a for a in axes if a not in inner))


@contextlib.contextmanager
def _ufuncs(u: np.ndarray, axes: tuple[int, ...]) -> Iterator[None]:
    """IEEE results without warnings, and a ufunc buffer no longer than a slice's run.

    With NumPy's default buffer (8192 elements), ``x - m`` against ``(rows, 1)``
    maxima goes through the buffers, several times slower (docs/performance.md).
    Both settings are NumPy's per-thread state.
    """
    run = math.prod(u.shape[min(axes) :])
    old = np.getbufsize()
    if run >= 64 and axes == tuple(range(min(axes), u.ndim)):
        np.setbufsize(min(8192, run // 16 * 16))
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            yield
    finally:
        np.setbufsize(old)


def _as_is(parts: np.ndarray, **_: Any) -> np.ndarray:
    return parts


def _merge_states(parts: Any, dtype: np.dtype, **_: Any) -> Any:
    """One state from the nested lists of ``reduction(concatenate=False)``, pairwise."""
    leaves = _leaves(parts)
    xp = _numpy_namespace()
    while len(leaves) > 1:  # log2(len) roundings deep
        pairs = zip(leaves[::2], leaves[1::2], strict=False)
        merged = [
            kernels.merge_states(xp, (a["m"], a["rest"]), (b["m"], b["rest"]))
            for a, b in pairs
        ]
        leaves = [_pack(m, r, dtype) for m, r in merged] + leaves[len(merged) * 2 :]
    return leaves[0]


def _leaves(parts: Any) -> list[Any]:
    """The states in nested lists, one level per reduced axis."""
    return (
        [a for p in parts for a in _leaves(p)] if isinstance(parts, list) else [parts]
    )


def _pack(m: np.ndarray, rest: np.ndarray, dtype: np.dtype) -> np.ndarray:
    out = np.empty(np.broadcast_shapes(m.shape, rest.shape), dtype=dtype)
    out["m"], out["rest"] = m, rest
    return out


def _block_from_state(
    call: Call, states: np.ndarray, *, negate: bool, log: bool
) -> Any:
    """softmax or log_softmax of one block from its slices' merged states."""
    xp = call.xp
    u = kernels.inputs(call, negate=negate)
    m, rest = states["m"], states["rest"]
    finite = np.isfinite(m).all()
    with _ufuncs(u, call.axes):
        if finite:  # the finite hot loop: no slice to rebuild
            z = np.subtract(u, m)
        else:
            # a +inf maximum shares its mass among the +inf entries (rest =
            # k - 1), nothing left gives -inf
            z = kernels.shift(xp, u, (), m).z
            rest = np.where(m > -_INF, rest, 0.0)
        if log:
            out = np.subtract(z, np.log1p(rest), out=z)
        else:
            out = np.divide(np.exp(z, out=z), rest + 1, out=z)
    if not finite:
        out = kernels.poison(xp, m, out, call.where)
    fill = -_INF if log else 0.0
    out = kernels.constant_where_masked(xp, out, call.where, fill)
    return kernels.round_to(xp, out, call.out_dtype)


def _block_finish(states: np.ndarray, *, out_dtype: Any, sign: bool) -> Any:
    """logsumexp of each slice from its merged state, and its sign next to it."""
    xp = _numpy_namespace()
    m = states["m"]
    lse = kernels.round_to(xp, kernels.lse_from_state(xp, m, states["rest"]), out_dtype)
    if not sign:
        return lse
    # 1 where something is left, 0 where nothing is, NaN with NaN
    found = kernels.poison(xp, m, (m > -_INF).astype(m.dtype))
    return np.stack([lse, kernels.round_to(xp, found, out_dtype)], axis=-1)
