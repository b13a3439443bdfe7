"""The CPU twin of the CuPy kernels: ``src/softmax_xp/_fast/cupy_kernels.cu`` in NumPy.

There is no GPU here, so the CUDA C kernel's algorithm is proven by running
it on the CPU: this module executes the same :class:`~softmax_xp._fast.cupy.Plan`
that the CuPy launcher hands the kernel (the same ``(outer, n, inner)`` view
and strides), with the same block of ``BLOCK`` threads, the same per-thread
chunks (thread ``t`` holds entries ``t + q * BLOCK`` of each tile), the same
merge order of the ``(m, r)`` pairs (the shuffle-down tree in each warp, then
across the warps), the same formulas, in the same compute dtype. Every
function names the kernel function it mirrors ("kernel: ..."), and they bear
the same names without the ``sxp_`` prefix. The threads of a block (and the
rows) run as NumPy array axes: an array of shape ``(rows, BLOCK)`` is one
value per thread.

What the twin cannot mirror is the GPU's own ``expf`` / ``log1pf`` (within
2 and 1 ulp, CUDA C Programming Guide, appendix "Mathematical Functions"):
NumPy's are used, so the twin proves the algorithm, the launcher's plan and
the special-value logic; the tests on a GPU prove the device's arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from softmax_xp._fast.cupy import (
    BLOCK,
    ITEMS,
    TILE,
    Plan,
    compute_name,
    plan,
    rounding,
)

__all__ = ["rows", "run"]

WARPS = BLOCK // 32
_KINDS = {"softmax": 0, "log_softmax": 1, "logsumexp": 2}


def np_dtype(name: str) -> Any:
    """The NumPy dtype called ``name`` (bfloat16: ml_dtypes')."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclass
class State:
    """kernel: State<A> -- one value per thread (or per row) in each field."""

    m: np.ndarray
    r: np.ndarray
    nan: np.ndarray  # bool
    k: np.ndarray  # int64


def empty(shape: tuple[int, ...], acc: Any) -> State:
    """kernel: sxp_empty."""
    return State(
        np.full(shape, -np.inf, acc),
        np.zeros(shape, acc),
        np.zeros(shape, bool),
        np.zeros(shape, np.int64),
    )


def merge(a: State, b: State) -> State:
    """kernel: sxp_merge -- the larger maximum first (``a`` on a tie)."""
    acc = a.m.dtype.type
    swap = b.m > a.m
    hi_m, hi_r = np.where(swap, b.m, a.m), np.where(swap, b.r, a.r)
    lo_m, lo_r = np.where(swap, a.m, b.m), np.where(swap, a.r, b.r)
    add = lo_m != -np.inf
    with np.errstate(invalid="ignore"):
        d = np.where(add, lo_m - hi_m, acc(0))
    r = np.where(add, hi_r + (acc(1) + lo_r) * np.exp(d), hi_r)
    return State(hi_m, r.astype(acc, copy=False), a.nan | b.nan, a.k + b.k)


def chunk_state(z: np.ndarray) -> State:
    """kernel: sxp_chunk -- ``z`` of shape (rows, ITEMS, BLOCK): each thread's chunk."""
    acc = z.dtype.type
    isnan = np.isnan(z)
    isinf = z == np.inf
    m = np.max(np.where(isnan | isinf, -np.inf, z), axis=1).astype(acc)
    r = np.zeros_like(m)
    ties = np.zeros(m.shape, np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        for q in range(ITEMS):  # the kernel's unrolled loop, in its order
            zq = z[:, q, :]
            ties += zq == m
            below = zq < m
            r = np.where(below, r + np.exp(np.where(below, zq - m, acc(0))), r)
    r = np.where(m != -np.inf, r + (ties - 1).astype(acc), r)
    return State(m, r, isnan.any(axis=1), isinf.sum(axis=1))


def load_values(
    plan: Plan, x2: np.ndarray, w2: np.ndarray | None, t2: np.ndarray | None, base: int
) -> tuple[np.ndarray, np.ndarray]:
    """kernel: sxp_load_tile -- a tile's values ``(rows, ITEMS, BLOCK)`` and which are off.

    ``x2``, ``w2``, ``t2``: the (rows, n) views of the input, mask and temperature.
    """
    acc = np_dtype(compute_name(plan.out)).type
    j = base + np.arange(BLOCK)[None, :] + np.arange(ITEMS)[:, None] * BLOCK
    inside = j < plan.n
    jj = np.minimum(j, plan.n - 1)
    keep = np.broadcast_to(inside, (plan.rows, ITEMS, BLOCK))
    if w2 is not None:
        keep = keep & w2[:, jj]
    v = _load(plan, x2[:, jj], acc)
    if plan.negate:
        v = -v
    if plan.t_mode:
        t = acc(plan.t_scalar) if plan.t_mode == 1 else t2[:, jj]  # type: ignore[index]
        finite = np.isfinite(v)
        with np.errstate(all="ignore"):
            v = np.where(finite, v / np.where(finite, t, acc(1)), v)
    z = np.where(keep, v, acc(-np.inf)).astype(acc)
    return z, ~keep


def _load(plan: Plan, raw: np.ndarray, acc: Any) -> np.ndarray:
    """kernel: Load<A, R, TIn> -- widen exactly, round once to R, widen to A.

    Integers and bool are converted to A first, then rounded.
    """
    target = rounding(plan.kind, plan.src, plan.out)
    with np.errstate(over="ignore"):
        v = raw.astype(np.float64 if plan.src == "float64" else np.float32)
        if plan.src not in ("float16", "bfloat16", "float32", "float64"):
            v = raw.astype(acc)
        if target is not None:
            v = v.astype(np_dtype(target)).astype(np.float32)
        return v.astype(acc)


def block_reduce(s: State) -> State:
    """kernel: sxp_block_reduce -- per-thread states (rows, BLOCK) to one per row."""
    acc = s.m.dtype.type

    def lanes(t: State, shape: tuple[int, ...]) -> State:
        return State(*(f.reshape(shape) for f in (t.m, t.r, t.nan, t.k)))

    def shfl_down(t: State, offset: int) -> State:
        # lane l reads lane l + offset; a lane past the warp reads its own value
        def shift(f: np.ndarray) -> np.ndarray:
            return np.concatenate([f[..., offset:], f[..., 32 - offset :]], axis=-1)

        return State(*(shift(f) for f in (t.m, t.r, t.nan, t.k)))

    rows = s.m.shape[0]
    t = lanes(s, (rows, WARPS, 32))
    offset = 16
    while offset > 0:
        t = merge(t, shfl_down(t, offset))
        offset >>= 1
    w = empty((rows, 32), acc)  # warp 0: lanes < WARPS read the warps' results
    for f, g in zip((w.m, w.r, w.nan, w.k), (t.m, t.r, t.nan, t.k), strict=True):
        f[:, :WARPS] = g[:, :, 0]
    offset = WARPS // 2
    while offset > 0:
        w = merge(w, shfl_down(w, offset))
        offset >>= 1
    return State(w.m[:, 0], w.r[:, 0], w.nan[:, 0], w.k[:, 0])


def row_constant(kind: str, s: State) -> np.ndarray:
    """kernel: sxp_row_constant -- ``1 / (1 + r)`` or ``1 / k``; ``log1p(r)`` or ``-log k``."""
    acc = s.m.dtype.type
    k = s.k.astype(acc)
    with np.errstate(divide="ignore"):
        if kind == "softmax":
            return np.where(s.k > 0, acc(1) / k, acc(1) / (acc(1) + s.r))
        return np.where(s.k > 0, -np.log(k), np.log1p(s.r))


def entries(
    kind: str, z: np.ndarray, off: np.ndarray, s: State, c: np.ndarray
) -> np.ndarray:
    """kernel: sxp_entry -- z (rows, ITEMS, BLOCK) to the results, in the compute dtype."""
    acc = z.dtype.type
    m, c = s.m[:, None, None], c[:, None, None]
    nan, k = s.nan[:, None, None], s.k[:, None, None]
    nothing = m == -np.inf
    zero = acc(0) if kind == "softmax" else acc(-np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        if kind == "softmax":
            normal = np.exp(np.where(nothing, acc(0), z - m)) * c
        else:
            normal = (z - m) - c
    out = np.where(nothing, zero, normal)
    out = np.where(k > 0, np.where(z == np.inf, c, zero), out)
    out = np.where(nan, acc(np.nan), out)
    return np.where(off, zero, out).astype(acc)


def lse(s: State) -> np.ndarray:
    """kernel: sxp_lse."""
    acc = s.m.dtype.type
    with np.errstate(invalid="ignore"):
        normal = s.m + np.log1p(s.r)
    out = np.where(s.m == -np.inf, s.m, normal)
    out = np.where(s.k > 0, acc(np.inf), out)
    return np.where(s.nan, acc(np.nan), out).astype(acc)


def _rows_view(a: np.ndarray, plan: Plan, strides: tuple[int, int, int]) -> np.ndarray:
    """``a`` as the kernel addresses it: (outer, n, inner) by the plan's strides, as (rows, n)."""
    size = a.dtype.itemsize
    v = np.lib.stride_tricks.as_strided(
        a,
        shape=(plan.outer, plan.n, plan.inner),
        strides=tuple(s * size for s in strides),
        writeable=False,
    )
    return np.moveaxis(v, 2, 1).reshape(plan.rows, plan.n)


def rows(plan: Plan, x: np.ndarray) -> np.ndarray:
    """kernel: sxp_rows -- the output of the launch ``plan`` describes, on input ``x``."""
    acc = np_dtype(compute_name(plan.out)).type
    x2 = _rows_view(x, plan, plan.x_strides)
    w2 = None if plan.where is None else _rows_view(plan.where, plan, plan.w_strides)
    t2 = (
        None
        if plan.temperature is None
        else _rows_view(plan.temperature, plan, plan.t_strides)
    )
    s = empty((plan.rows, BLOCK), acc)
    for base in range(0, plan.n, TILE):
        z, _ = load_values(plan, x2, w2, t2, base)
        s = merge(s, chunk_state(z))
    s = block_reduce(s)
    out_dtype = np_dtype(plan.out)
    if plan.kind == "logsumexp":
        with np.errstate(over="ignore"):
            return lse(s).astype(out_dtype).reshape(plan.out_shape)
    c = row_constant(plan.kind, s)
    y2 = np.empty((plan.rows, plan.n), acc)
    for base in range(0, plan.n, TILE):
        z, off = load_values(plan, x2, w2, t2, base)
        vals = entries(plan.kind, z, off, s, c).reshape(plan.rows, TILE)
        # entry base + q * BLOCK + t sits at q * BLOCK + t of the flattened tile
        y2[:, base : base + TILE] = vals[:, : min(TILE, plan.n - base)]
    y3 = np.moveaxis(y2.reshape(plan.outer, plan.inner, plan.n), 1, 2)
    with np.errstate(over="ignore"):
        return np.ascontiguousarray(y3).astype(out_dtype).reshape(plan.out_shape)


def run(kind: str, call: Any, **opts: Any) -> np.ndarray | None:
    """The twin's answer to ``call`` (NumPy arrays), or ``None`` where the kernel falls back."""
    p = plan(kind, call, **opts)
    return None if p is None else rows(p, call.x)
