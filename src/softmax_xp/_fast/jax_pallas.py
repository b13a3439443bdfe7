"""JAX on the GPU: Pallas kernels (Triton backend), off by default.

The switch. ``SOFTMAX_XP_PALLAS=1`` in the environment when
``softmax_xp._fast.jax`` is imported turns the kernels on for arrays on a CUDA
device; without it (the default) this module is never imported. They stay off
by default until a GPU benchmark shows them faster than the XLA-fused path
(issue 14). Where they are on, the jitted function of a covered configuration
picks the kernel with ``lax.platform_dependent``: the Pallas branch on
``cuda``, the XLA-fused core of ``_fast/jax.py`` on every other platform, a
choice made when the function is lowered (no device test per call, and it
works inside a caller's ``jit``). For the tests, ``softmax_xp._fast.jax._PALLAS
= "interpret"`` (private) runs the kernels on every platform with
``pallas_call(..., interpret=True)``, which is how the CPU proves their logic.
A JAX without the APIs used here (``jax.experimental.pallas.triton.load`` /
``CompilerParams``, ``lax.platform_dependent``) leaves the switch off.

What is covered: softmax, softmin, log_softmax and unweighted real logsumexp
(``return_sign`` and ``keepdims`` included), over one axis or a run of
adjacent axes, with or without ``where`` and ``temperature`` (a Python float
or an array), every real floating dtype and integer or bool input, up to
``2**31 - 1`` elements. Everything else (weights ``b``, complex input,
``axis=()``, empty input, axes that are not adjacent, larger arrays) runs
the XLA path unchanged.

The algorithm. ``x`` is viewed, without a copy, as ``(outer, N, inner)``: the
reduced axes in the middle. One program handles a tile of ``BI`` slices (``BI``
adjacent ``inner`` positions, 1 for the last axis) times ``BN`` positions
along ``N``, indexing the flat array itself (a mask and an array temperature
likewise, with stride 0 along the groups of axes they broadcast over).
Per entry, in the compute dtype (float32 for half precision, float64 stays
float64): the load converts (an integer or bool input to the compute dtype; a
narrowing ``dtype=`` rounds to the dtype ``softmax_xp._call.input_rounding``
names first), ``z = x`` (``-x`` for softmin), ``z / temperature``, and
masked entries (``where`` False, and the padding lanes past ``N``) become
``-inf`` and count for nothing, even when they hold NaN. Per slice the kernel
keeps the count of NaN entries (Triton's ``max`` drops NaN, so they are
counted, never maximised), the count ``k`` of ``+inf`` entries, and the
online pair ``(m, r)`` over the other entries: ``m`` the running maximum and
``r`` the *rest*, the sum of ``exp(z - m)`` over every entry but one
occurrence of the maximum. A chunk with maximum ``bm`` has
``r = sum_{z < bm} exp(z - bm) + (count(z == bm) - 1)`` (exact for ties); a
chunk with nothing left is ``(-inf, -1)``. Two pairs merge, ``m1 >= m2``, as
``(m1, r1 + (1 + r2) exp(m2 - m1))``, the shift taken as 0 on a tie so that
``exp(-inf - -inf)`` is never formed. The results, rounded once to the
output dtype: a NaN slice is all NaN (logsumexp NaN); ``k >= 1`` gives
softmax ``1/k`` on the ``+inf`` entries and 0 elsewhere, log_softmax
``-log k`` there and ``-inf`` elsewhere, logsumexp ``+inf``; nothing left
(``m = -inf``, ``k = 0``) gives 0 / ``-inf`` / ``-inf``; otherwise softmax
``exp(z - m) / (1 + r)``, log_softmax ``(z - m) - log1p(r)`` and logsumexp
``m + log1p(r)`` (the log1p form of docs/contract.md). Masked entries come out
0 / ``-inf``.

Blocks. A slice whose tile fits ``_ONE_PASS`` elements (8192 in float32,
4096 in float64, about 16 values per thread at 16 warps: no spills) is read
once into registers and written once. Longer slices loop over chunks of
``_CHUNK`` elements (``lax.fori_loop`` in the kernel) to build ``(m, r)``,
then a second loop reads the chunks again and writes (logsumexp needs only the
first). Warps: one per 256 tile elements, 1 to 16; ``num_stages=1`` (no
software pipelining: each load is used once). The grid is one-dimensional
(CUDA limits the others to 65,535).

Gradients: ``jax.custom_jvp`` with the rules of ``_fast/jax.py`` in terms of
``u``, the masked, negated and tempered input, whose tangent is formed here
as ``kernels.inputs`` differentiates (``t_x / T - u t_T / T`` at finite
``x``, ``t_x`` at infinite ones, 0 where ``x / T`` overflowed and at masked
entries): with ``p`` the softmax on slices with a finite maximum (0 on
``+inf`` slices, NaN on NaN ones), softmax ``p (t - sum(p t))``,
log_softmax ``live t - sum(p t)``, logsumexp ``sum(p t)``; masked outputs
get tangent 0. ``p`` and the slice flags come from the kernels themselves (a
softmax and a logsumexp in the compute dtype), so second derivatives go
through these rules again; the tangent arithmetic is plain ``jnp`` (XLA),
which JAX transposes for reverse mode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._call import Call, input_rounding
from .._compat import dtype_kind

try:  # the Triton flavour of Pallas, as of jax 0.4.36 (absent at older floors)
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    AVAILABLE = all(
        hasattr(plgpu, name) for name in ("CompilerParams", "load", "store")
    ) and hasattr(lax, "platform_dependent")
except ImportError:  # pragma: no cover - depends on the installed jax
    AVAILABLE = False

__all__ = ["AVAILABLE", "Plan", "plan_for", "prepared"]

# elements of one tile: read once and kept in registers (by compute dtype size)
_ONE_PASS = {4: 8192, 8: 4096}
# elements of one chunk of a longer slice
_CHUNK = {4: 4096, 8: 2048}
# flat int32 offsets index the arrays
_MAX_SIZE = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Plan:
    """A kernel's static configuration (hashable)."""

    kind: str  # softmax | log_softmax | logsumexp
    negate: bool
    outer: int
    n: int
    inner: int
    x_dtype: Any
    casts: tuple[Any, ...]  # the dtypes the loaded x passes through, compute last
    out_dtype: Any
    where: tuple[int, int, int] | None  # strides of (outer, n, inner); 0: broadcast
    temperature: tuple[int, int, int] | None
    bi: int  # slices (inner positions) per tile
    bn: int  # entries per tile along the slice
    chunks: int  # 1: one pass; else the number of chunks of bn
    num_warps: int

    @property
    def compute(self) -> Any:
        return self.casts[-1]


# ---------------------------------------------------------------------------
# Planning


def _groups(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int, int]:
    a0, a1 = axes[0], axes[-1] + 1
    return (
        math.prod(shape[:a0]),
        math.prod(shape[a0:a1]),
        math.prod(shape[a1:]),
    )


def _aux_layout(
    aux_shape: tuple[int, ...], shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[int, int, int] | None:
    """Strides of an array broadcast to ``shape``, per group, or ``None``: materialise it.

    A group (the axes before, in and after the reduced run) is read either
    whole or not at all (every axis of the group 1 in ``aux_shape``).
    """
    full = (1,) * (len(shape) - len(aux_shape)) + tuple(aux_shape)
    a0, a1 = axes[0], axes[-1] + 1
    sizes = []
    for lo, hi in ((0, a0), (a0, a1), (a1, len(shape))):
        if all(full[i] == 1 for i in range(lo, hi)):
            sizes.append(1)
        elif all(full[i] == shape[i] for i in range(lo, hi)):
            sizes.append(math.prod(shape[lo:hi]))
        else:
            return None
    o, n, i = sizes
    return (n * i if o > 1 else 0, i if n > 1 else 0, 1 if i > 1 else 0)


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _casts(call: Call, kind: str) -> tuple[Any, ...]:
    """The dtypes a loaded ``x`` passes through, as ``kernels.masked`` / ``to_compute`` do."""
    x_dtype = call.x.dtype
    compute = call.compute_dtype
    # logsumexp rounds a narrowing dtype= as its own function does
    func = "logsumexp" if kind == "logsumexp" else call.func
    probe = dataclasses.replace(call, func=func)
    if dtype_kind(call.xp, x_dtype) != "real floating":
        target = input_rounding(probe, compute)
        return (compute,) if target is None else (compute, target, compute)
    target = input_rounding(probe, x_dtype)
    return (compute,) if target is None else (target, compute)


def plan_for(kind: str, call: Call, *, negate: bool) -> Plan | None:
    """The kernel plan of a covered call, or ``None`` (the XLA path runs)."""
    axes, shape = call.axes, call.shape
    if not AVAILABLE or call.empty or not axes or call.b is not None:
        return None
    if axes != tuple(range(axes[0], axes[-1] + 1)):
        return None  # not one run of adjacent axes
    if dtype_kind(call.xp, call.compute_dtype) != "real floating":
        return None
    if math.prod(shape) > _MAX_SIZE or tuple(call.x.shape) != tuple(shape):
        return None
    size = np.dtype(call.compute_dtype).itemsize
    if size not in _ONE_PASS:
        return None
    outer, n, inner = _groups(shape, axes)

    def layout(a: Any) -> tuple[int, int, int] | None:
        if a is None or isinstance(a, float):
            return None if a is None else (0, 0, 0)
        found = _aux_layout(tuple(a.shape), shape, axes)
        # not expressible per group: prepared() broadcasts it in full
        return found if found is not None else _aux_layout(shape, shape, axes)

    one, chunk = _ONE_PASS[size], _CHUNK[size]
    bi = 1 if inner == 1 else min(_next_pow2(inner), 64)
    if bi * _next_pow2(n) <= one:
        bn, chunks = _next_pow2(n), 1
    elif _next_pow2(n) <= one:  # fits a tile with fewer slices
        bi = max(one // _next_pow2(n), 1)
        bn, chunks = _next_pow2(n), 1
    else:
        bi = min(bi, 16)
        bn = chunk // bi
        chunks = -(-n // bn)
    return Plan(
        kind=kind,
        negate=negate,
        outer=outer,
        n=n,
        inner=inner,
        x_dtype=call.x.dtype,
        casts=_casts(call, kind),
        out_dtype=call.out_dtype,
        where=layout(call.where),
        temperature=layout(call.temperature),
        bi=bi,
        bn=bn,
        chunks=chunks,
        num_warps=min(max(bi * bn // 256, 1), 16),
    )


# ---------------------------------------------------------------------------
# The kernel


def _kernel(plan: Plan, interpret: bool, *refs: Any) -> None:
    it = iter(refs)
    x_ref = next(it)
    w_ref = next(it) if plan.where is not None else None
    t_ref = next(it) if plan.temperature is not None else None
    o_ref = next(it)
    compute = plan.compute
    n_, inner = plan.n, plan.inner
    blocks = -(-inner // plan.bi)
    pid = pl.program_id(0)
    o = pid // blocks
    i = (pid % blocks) * plan.bi + jnp.arange(plan.bi)[:, None]  # (bi, 1)
    slice_ok = i < inner
    ninf = jnp.asarray(-jnp.inf, compute)
    size = plan.outer * n_ * inner

    def safe(at: Any, ok: Any) -> Any:
        """Store offsets. The interpreter stores ``where(mask, new, old)`` at every
        lane, so a masked lane that aliases a written entry (past ``inner`` or
        ``N``) would undo the write: there it points past the end (dropped).
        On the GPU a masked lane stores nothing, and a select would hide the
        offsets' contiguity from Triton's vectoriser."""
        return jnp.where(ok, at, size) if interpret else at

    def load(start: Any) -> tuple[Any, Any]:
        """``(z, keep)`` of the chunk starting at ``start``: ``z`` masked to ``-inf``."""
        n = start + jnp.arange(plan.bn)[None, :]  # (1, bn)
        valid = slice_ok & (n < n_)
        x = plgpu.load(x_ref.at[o * (n_ * inner) + n * inner + i], mask=valid, other=0)
        for dtype in plan.casts:
            x = x.astype(dtype)
        keep = valid
        if w_ref is not None:
            assert plan.where is not None
            so, sn, si = plan.where
            keep = keep & plgpu.load(
                w_ref.at[o * so + n * sn + i * si], mask=valid, other=False
            )
        z = -x if plan.negate else x
        if t_ref is not None:
            assert plan.temperature is not None
            so, sn, si = plan.temperature
            t = plgpu.load(t_ref.at[o * so + n * sn + i * si], mask=valid, other=1)
            z = z / jnp.where(keep, t.astype(compute), 1.0)
        return jnp.where(keep, z, ninf), keep

    def state(z: Any) -> tuple[Any, Any, Any, Any]:
        """``(m, r, k, nans)`` of one chunk, per slice (shape ``(bi, 1)``)."""
        nan = jnp.isnan(z)
        nans = jnp.sum(nan, axis=1, keepdims=True, dtype=jnp.int32)
        pos = z == jnp.inf
        k = jnp.sum(pos, axis=1, keepdims=True, dtype=jnp.int32)
        zf = jnp.where(nan | pos, ninf, z)  # finite or -inf
        m = jnp.max(zf, axis=1, keepdims=True)
        top = (zf == m) & (zf > ninf)
        e = jnp.exp(zf - jnp.where(m > ninf, m, 0.0))
        r = jnp.sum(jnp.where(top, 0.0, e), axis=1, keepdims=True)
        r = r + (jnp.sum(top.astype(compute), axis=1, keepdims=True) - 1.0)
        return m, r, k, nans

    def merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        (m1, r1, k1, n1), (m2, r2, k2, n2) = a, b
        first = m1 >= m2
        hi, lo = jnp.maximum(m1, m2), jnp.minimum(m1, m2)
        r_hi, r_lo = jnp.where(first, r1, r2), jnp.where(first, r2, r1)
        shift = jnp.where(hi == lo, 0.0, lo - hi)
        return hi, r_hi + (1.0 + r_lo) * jnp.exp(shift), k1 + k2, n1 + n2

    def finish(z: Any, keep: Any, st: tuple[Any, ...]) -> Any:
        m, r, k, nans = st
        kf = k.astype(compute)
        pos = z == jnp.inf
        zf = jnp.where(pos, ninf, z)
        zm = zf - jnp.where(m > ninf, m, 0.0)  # -inf: nothing left, or -inf entries
        if plan.kind == "softmax":
            fin = jnp.exp(zm) / jnp.maximum(1.0 + r, 1.0)
            out = jnp.where(k > 0, jnp.where(pos, 1.0 / jnp.maximum(kf, 1.0), 0.0), fin)
            fill = 0.0
        else:
            fin = zm - jnp.log1p(jnp.maximum(r, 0.0))
            inf_val = -jnp.log(jnp.maximum(kf, 1.0))
            out = jnp.where(k > 0, jnp.where(pos, inf_val, ninf), fin)
            fill = -jnp.inf
        out = jnp.where(nans > 0, jnp.nan, out)
        return jnp.where(keep, out, fill).astype(plan.out_dtype)

    def lse(st: tuple[Any, ...]) -> Any:
        m, r, k, nans = st
        fin = jnp.where(m > ninf, m, 0.0) + jnp.log1p(jnp.maximum(r, 0.0))
        out = jnp.where(m > ninf, fin, ninf)
        out = jnp.where(k > 0, jnp.inf, out)
        return jnp.where(nans > 0, jnp.nan, out).astype(plan.out_dtype)

    if plan.chunks == 1:
        z, keep = load(0)
        st = state(z)
    else:

        def step(c: Any, carry: tuple[Any, ...]) -> tuple[Any, ...]:
            return merge(carry, state(load(c * plan.bn)[0]))

        shape = (plan.bi, 1)
        init = (
            jnp.full(shape, -jnp.inf, compute),
            jnp.full(shape, -1.0, compute),
            jnp.zeros(shape, jnp.int32),
            jnp.zeros(shape, jnp.int32),
        )
        st = lax.fori_loop(0, plan.chunks, step, init)

    if plan.kind == "logsumexp":
        at = safe(o * inner + i, slice_ok)
        plgpu.store(o_ref.at[at], lse(st), mask=slice_ok)
        return

    def write(start: Any, z: Any, keep: Any) -> None:
        n = start + jnp.arange(plan.bn)[None, :]
        valid = slice_ok & (n < n_)
        at = safe(o * (n_ * inner) + n * inner + i, valid)
        plgpu.store(o_ref.at[at], finish(z, keep, st), mask=valid)

    if plan.chunks == 1:
        write(0, z, keep)
    else:

        def out_step(c: Any, carry: Any) -> Any:
            write(c * plan.bn, *load(c * plan.bn))
            return carry

        lax.fori_loop(0, plan.chunks, out_step, 0)


def launch(plan: Plan, x: Any, where: Any, temperature: Any, *, interpret: bool) -> Any:
    """The kernel's output: ``x``'s shape (flat), or ``(outer * inner,)`` for logsumexp."""
    operands = [x.reshape(-1)]
    for a in (where, temperature):
        if a is not None:
            operands.append(a.reshape(-1))
    size = plan.outer * plan.n * plan.inner
    out_len = plan.outer * plan.inner if plan.kind == "logsumexp" else size
    grid = (plan.outer * -(-plan.inner // plan.bi),)
    call = pl.pallas_call(
        functools.partial(_kernel, plan, interpret),
        out_shape=jax.ShapeDtypeStruct((out_len,), plan.out_dtype),  # type: ignore[no-untyped-call]
        grid=grid,
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=plan.num_warps, num_stages=1),
    )
    return call(*operands)


# ---------------------------------------------------------------------------
# The differentiable functions


def _input_tangent(plan: Plan, x: Any, tx: Any, where: Any, t: Any, tt: Any) -> Any:
    """The tangent of ``u`` (masked, negated, tempered ``x``), as ``kernels.inputs`` has it."""
    compute = plan.compute
    xc = x
    for dtype in plan.casts:
        xc = xc.astype(dtype)
    sign = -1.0 if plan.negate else 1.0
    if jnp.issubdtype(x.dtype, jnp.floating):
        tu = sign * tx.astype(compute)
    else:  # integer and bool input: no tangent
        tu = jnp.zeros(x.shape, compute)
    if t is not None:
        tc = jnp.asarray(t).astype(compute)
        if tt is None or not jnp.issubdtype(jnp.asarray(t).dtype, jnp.floating):
            ttc = jnp.zeros_like(tc)
        else:
            ttc = jnp.asarray(tt).astype(compute)
        finite = jnp.isfinite(xc)
        t_safe = jnp.where(finite, tc, 1.0)
        u = sign * jnp.where(finite, xc, 0.0) / t_safe
        du = jnp.where(finite, (tu - u * jnp.where(finite, ttc, 0.0)) / t_safe, tu)
        # where x / T overflowed the output is a constant +-inf
        tu = jnp.where(finite & ~jnp.isfinite(u), 0.0, du)
    if where is not None:
        tu = jnp.where(where, tu, 0.0)
    return tu


def _differentiable(
    plan: Plan, shape: tuple[int, ...], axes: tuple[int, ...], *, interpret: bool
) -> Callable[..., Any]:
    """``fn(x, where, temperature)``: the kernel's result in ``shape`` terms, with its JVP rule.

    softmax / log_softmax: ``x``'s shape; logsumexp: the reduced shape with
    ``keepdims``. ``where`` and ``temperature`` are arrays broadcastable to
    ``x`` (``temperature`` in the compute dtype) or ``None``.
    """
    keep_shape = tuple(1 if d in axes else n for d, n in enumerate(shape))

    def primal(x: Any, where: Any, temperature: Any) -> Any:
        out = launch(plan, x, where, temperature, interpret=interpret)
        return out.reshape(keep_shape if plan.kind == "logsumexp" else shape)

    fn = jax.custom_jvp(primal)
    compute = plan.compute
    in_compute = dataclasses.replace(plan, out_dtype=compute)
    softmax_plan = dataclasses.replace(
        in_compute, kind="softmax", bn=plan.bn, chunks=plan.chunks
    )
    lse_plan = dataclasses.replace(in_compute, kind="logsumexp")

    def jvp(primals: Any, tangents: Any) -> tuple[Any, Any]:
        x, where, temperature = primals
        tx, _, tt = tangents
        y = fn(x, where, temperature)
        softmax = (
            y if plan == softmax_plan else _cached(softmax_plan)(x, where, temperature)
        )
        lse = lax.stop_gradient(
            y if plan == lse_plan else _cached(lse_plan)(x, where, temperature)
        )
        nan = jnp.isnan(lse)
        finite = jnp.where(nan, lse, jnp.where(lse == jnp.inf, 0.0, 1.0))
        live = jnp.where(nan, lse, jnp.where(jnp.isfinite(lse), 1.0, 0.0))
        p = softmax * finite
        t = _input_tangent(plan, x, tx, where, temperature, tt)
        dot = jnp.sum(p * t, axis=axes, keepdims=True)
        if plan.kind == "softmax":
            out = p * (t - dot)
        elif plan.kind == "log_softmax":
            out = live * t - dot
        else:
            return y, dot.astype(plan.out_dtype)
        if where is not None:
            out = jnp.where(where, out, 0.0)
        return y, out.astype(plan.out_dtype)

    def _cached(p: Plan) -> Any:
        return _differentiable(p, shape, axes, interpret=interpret)

    fn.defjvp(jvp)
    return fn


_differentiable = functools.cache(_differentiable)


# ---------------------------------------------------------------------------
# What _fast/jax.py runs


def prepared(
    kind: str,
    call: Call,
    opts: dict[str, Any],
    fallback: Callable[..., Any],
    *,
    interpret: bool,
) -> Callable[..., Any] | None:
    """The function ``_launch`` runs, ``fn(x, *arrays)``, or ``None`` where not covered.

    ``arrays`` are those of ``where`` and ``temperature`` that the call has,
    in that order (a temperature may be a Python float), as ``fallback`` (the
    XLA-fused kernel, run on other platforms) takes them.
    """
    negate = bool(opts.get("negate", False))
    plan = plan_for(kind, call, negate=negate)
    if plan is None:
        return None
    shape, axes = tuple(call.shape), call.axes
    given = (call.where is not None, call.temperature is not None)
    compute = call.compute_dtype
    keepdims = bool(opts.get("keepdims", False))
    return_sign = bool(opts.get("return_sign", False))

    def pallas(x: Any, *arrays: Any) -> Any:
        it = iter(arrays)
        where, temperature = (next(it) if g else None for g in given)
        if temperature is not None:
            temperature = jnp.asarray(temperature).astype(compute)
        # the mask's and temperature's layouts: their shapes are known here,
        # at trace time (one configuration serves masks of several shapes)
        aux, layouts = [], []
        for given_aux in (where, temperature):
            a, found = given_aux, None
            if a is not None:
                found = _aux_layout(tuple(a.shape), shape, axes)
                if found is None:  # broadcast over part of a group
                    a = jnp.broadcast_to(a, shape)
                    found = _aux_layout(shape, shape, axes)
                a = _with_ndim(a, len(shape))
            aux.append(a)
            layouts.append(found)
        traced = dataclasses.replace(plan, where=layouts[0], temperature=layouts[1])
        if kind != "logsumexp":
            return _differentiable(traced, shape, axes, interpret=interpret)(x, *aux)
        if not return_sign:
            out = _differentiable(traced, shape, axes, interpret=interpret)(x, *aux)
            return out if keepdims else jnp.squeeze(out, axis=axes)
        # the sign is read before rounding: a total that rounds to 0 was left
        in_compute = dataclasses.replace(traced, out_dtype=compute)
        lse = _differentiable(in_compute, shape, axes, interpret=interpret)(x, *aux)
        lse = lse if keepdims else jnp.squeeze(lse, axis=axes)
        v = lax.stop_gradient(lse)
        sign = jnp.where(jnp.isnan(v), v, (v > -jnp.inf).astype(v.dtype))
        out = _round(lse, plan.out_dtype)
        return out, sign.astype(plan.out_dtype)

    if interpret:
        return jax.jit(pallas)

    def on_platform(x: Any, *arrays: Any) -> Any:
        return lax.platform_dependent(x, *arrays, cuda=pallas, default=fallback)

    return jax.jit(on_platform)


def _with_ndim(a: Any, ndim: int) -> Any:
    a = jnp.asarray(a)
    return a.reshape((1,) * (ndim - a.ndim) + a.shape)


def _round(a: Any, dtype: Any) -> Any:
    return a if a.dtype == dtype else a.astype(dtype)
