"""PyTorch on CUDA: Triton kernels that keep the whole contract in one launch.

Used by :func:`softmax_xp._fast.torch.run` for CUDA tensors when Triton
imports (it ships with torch's CUDA wheels); :func:`_on_cpu` routes CPU
tensors here too, so that the tests run the kernels under Triton's
interpreter (``TRITON_INTERPRET=1``) through the public functions.

The algorithm (every GPU kernel of softmax-xp computes the same):

- **Rows.** A row is one slice along the reduced axis (tuple axes must be
  adjacent: they are merged). The launcher describes ``x`` as
  ``(outer, N, inner)`` by three strides, without copying; one program
  handles one of the ``outer * inner`` rows. ``where`` and an array
  temperature are broadcast views (``torch.broadcast_to``) described the same
  way, with their own strides (0 along broadcast axes).
- **Inputs.** Each entry is loaded once per pass and converted in registers:
  integers and bools to the compute dtype, then a narrowing ``dtype=`` rounds
  to its target (:func:`softmax_xp._call.input_rounding`), then to the
  compute dtype (float32 for float16 / bfloat16 / float32, float64 stays
  float64). ``z = x`` (softmin: ``-x``), then ``z / temperature`` for finite
  ``z`` (IEEE division, ``div_rn``: a Python scalar arrives as a float64
  argument and is rounded to the compute dtype, as torch's ``x / t`` rounds
  it; an array temperature is converted per entry). Masked entries
  (``where`` False) become ``-inf`` and are ignored, even when they hold NaN.
- **The online pair.** Per row, ``(m, r)``: ``m`` the largest finite (or
  ``-inf``) entry, ``r`` the rest, ``sum_{z < m} exp(z - m) + (count(z == m) - 1)``
  (exact for ties; ``r = -1`` when there is nothing, so ``1 + r = 0`` is
  neutral). A chunk's pair merges into the running one, larger maximum
  first, as ``(m1, r1 + (1 + r2) * exp(m2 - m1))``; a ``-inf`` side adds
  nothing and ``exp(-inf - -inf)`` is never formed. NaN and ``+inf``
  entries stay out of the pair and are counted instead (Triton's ``tl.max``
  drops NaN; the interpreter's propagates it, so neither is relied on).
- **Results.** A NaN in the row: all NaN (logsumexp NaN). ``k >= 1`` ``+inf``
  entries: softmax ``1/k`` there and 0 elsewhere, log_softmax
  ``-log1p(k - 1)`` there and ``-inf`` elsewhere, logsumexp ``+inf``.
  Nothing left (all ``-inf``, all masked): 0, ``-inf``, ``-inf``. Otherwise
  softmax ``exp(z - m) / (1 + r)``, log_softmax ``z - m - log1p(r)``,
  logsumexp ``m + log1p(r)`` -- the generic core's formulas. Masked entries
  are 0 / ``-inf``. Each result is rounded once to the output dtype.
- **Two regimes.** A row of at most :data:`_SINGLE_MAX` entries (4096 for a
  float32 computation, 2048 for float64) is one block: read once, written
  once. Longer rows loop over chunks of :data:`_CHUNK` entries (the same
  sizes) with the online pair (one read), then a second loop reads again and
  writes. One warp per 256 entries, at most 16: 8 values per thread and
  array at the caps, which ptxas compiles without spills for sm_80 and sm_90
  (a block of 8192 float32 entries spilled; ``tests/test_gpu_triton.py``
  checks every kernel and dtype and prints the registers).
- **Backward.** softmax ``gx = y * (g - sum(g * y))``; log_softmax
  ``gx = g - p * sum(g)`` with ``p = exp(z - lse)`` recomputed from ``x``
  and the row's logsumexp (``exp(y)`` of a half-precision ``y`` would carry
  its rounding, ``|y|`` half ulps, into ``p``); logsumexp
  ``gx = g_row * exp(z - lse)``. The row sums run over unmasked entries
  only; then times ``dz/dx`` (``-1`` for softmin, ``1/t`` where ``x`` is
  finite). 0 at masked entries and in rows with ``+inf`` or nothing left,
  NaN (unmasked entries) in NaN rows: what the generic core's autograd
  gives. The forward saves one value per row for it (softmax a status byte;
  log_softmax and logsumexp the row's logsumexp in the compute dtype). A
  half-precision log_softmax also drops the cotangents of its infinite
  outputs, as the generic core's rounding (a clamp whose infinite branch is
  a constant) does.

``exp`` and ``log1p`` are libdevice's ``__nv_exp[f]`` / ``__nv_log1p[f]``
on the GPU (within 1-2 ulp; ``tl.exp`` of float32 is ``ex2.approx`` of a
rounded product, whose relative error grows with ``|z|``); the interpreter
has no libdevice, and runs ``tl.exp`` (NumPy's) and ``log1p`` from ``log``
(Goldberg's ``log(u) * r / (u - 1)``, ``u = 1 + r``); its casts to
bfloat16 truncate, so there float32 is rounded to bfloat16 by integer
arithmetic (to nearest even, as ``cvt.rn`` on the GPU). Everything else is
the same code on both. Casts from float64 to half precision go through
float32, as torch's do.

Autograd and ``torch.compile``: the kernels run inside ``torch.library``
custom ops (``triton_op`` + ``wrap_triton``), with the backward registered
by ``register_autograd``, so a compiled graph keeps them without a break
(inductor can also trace into a ``triton_op`` and schedule its kernels).
The interpreter's kernels cannot be traced, so there the ops are opaque
``custom_op`` s with the same Python body as fake implementation (launches
skipped on fake tensors). The backward kernels are not differentiable: under
``create_graph=True`` (a double backward) the gradient is computed again
through the generic core, whose autograd graph carries second derivatives
(:func:`_differentiable_backward`).

Nothing synchronises with the host and nothing full-size is allocated but the
output (and, under autograd, the gradient): per-row statistics are ``R``
entries. The exception: a gradient ``g`` whose layout the strides cannot
describe is copied once (``g.contiguous()``).

Configurations that fall back to today's path (``run`` returns
``NotImplemented``): empty arrays and ``axis=()``; non-adjacent axes; an
``x``, mask or temperature whose ``(outer, N, inner)`` view would need a copy
(for example a mask of shape ``(B, 1, N)`` over ``(B, C, N)`` along the last
axis, or a transposed 3-d ``x``); weighted, signed and complex logsumexp; an
array temperature that requires grad; functorch-wrapped tensors and tensor
subclasses (outside ``torch.compile``); dtypes other than float16, bfloat16,
float32, float64, integers and bool.
"""

# Triton's JIT reads the @triton.jit functions' source: NaN tests are
# ``v != v``, scalar arguments are typed by string annotations ("fp64"), and
# constexpr branches are written out in full (if / else, no ternaries)
# ruff: noqa: PLR0124, F821, UP037, RET505, SIM108

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, cast

import torch
import triton  # type: ignore[import-untyped,import-not-found,unused-ignore]
import triton.language as tl  # type: ignore[import-untyped,import-not-found,unused-ignore]
from torch._subclasses.fake_tensor import is_fake
from triton.language.extra import libdevice  # type: ignore[import-untyped,import-not-found,unused-ignore]

from .._call import Call, input_rounding

__all__ = ["run"]

# the @triton.jit functions are untyped (Triton ships no types), their scalar
# arguments typed by Triton's string annotations ("fp64")
# mypy: disable-error-code="no-untyped-def,no-untyped-call,untyped-decorator,name-defined"

_INTERPRET = tl.constexpr(bool(triton.knobs.runtime.interpret))

# rows up to this many entries are one block (compute dtype float32, float64)
_SINGLE_MAX = {False: 4096, True: 2048}
# the chunk of the long-row loops
_CHUNK = {False: 4096, True: 2048}
_MIN_BLOCK = 16

_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# ROUND codes of the kernels: the dtype a narrowing dtype= rounds x to first
_ROUND = {None: 0, torch.float16: 1, torch.bfloat16: 2, torch.float32: 3}
_KIND = {"softmax": 0, "log_softmax": 1, "logsumexp": 2}


# ---------------------------------------------------------------------------
# kernels


@triton.jit
def _exp(v):
    if _INTERPRET:
        return tl.exp(v)
    else:
        return libdevice.exp(v)


@triton.jit
def _log1p(v):
    """``log1p(v)`` for ``v >= 0`` (libdevice; in the interpreter, Goldberg's form)."""
    if _INTERPRET:
        u = 1.0 + v
        d = u - 1.0
        safe = tl.where(d == 0.0, 1.0, d)
        return tl.where(d == 0.0, v, tl.log(u) * (v / safe))
    else:
        return libdevice.log1p(v)


@triton.jit
def _div(a, b):
    """``a / b`` rounded as IEEE does (float32 ``/`` may be approximate on the GPU)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.jit
def _scalar_t(t_scalar, like):
    """The float64 scalar temperature rounded to ``like``'s dtype, in ``like``'s shape."""
    if _INTERPRET:  # a Python float there, rounded as NumPy adds it
        return tl.zeros_like(like) + t_scalar
    else:
        return tl.zeros_like(like) + t_scalar.to(like.dtype)


@triton.jit
def _load_z(
    X,
    W,
    T,
    bx,
    bw,
    bt,
    cols,
    N,
    sx_n,
    sw_n,
    st_n,
    t_scalar,
    NEGATE: tl.constexpr,
    HAS_W: tl.constexpr,
    T_MODE: tl.constexpr,
    IS_INT: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
):
    """``(z, keep)`` of one chunk: the contract's ``z`` in the compute dtype, -inf where not kept."""
    keep = cols < N
    if HAS_W:
        keep = keep & (tl.load(W + bw + cols * sw_n, mask=keep, other=0) != 0)
    z = _convert(tl.load(X + bx + cols * sx_n, mask=keep, other=0), IS_INT, ROUND, F64)
    if NEGATE:
        z = -z
    if T_MODE == 1:
        z = _div(z, _scalar_t(t_scalar, z))
    elif T_MODE == 2:
        t = _convert(tl.load(T + bt + cols * st_n, mask=keep, other=1), True, 0, F64)
        finite = tl.abs(z) < float("inf")  # False for NaN too
        z = tl.where(finite, _div(z, tl.where(finite, t, 1.0)), z)
    z = tl.where(keep, z, float("-inf"))
    return z, keep


@triton.jit
def _convert(v, IS_INT: tl.constexpr, ROUND: tl.constexpr, F64: tl.constexpr):
    """Loaded values in the compute dtype, rounded first as a narrowing ``dtype=`` asks."""
    if IS_INT:
        if F64:
            v = v.to(tl.float64)
        else:
            v = v.to(tl.float32)
    # half precision through float32, as torch's casts from float64 round
    if ROUND == 1:
        v = v.to(tl.float32).to(tl.float16)  # to nearest even
    elif ROUND == 2:
        v = _to_bf16(v.to(tl.float32))
    elif ROUND == 3:
        v = v.to(tl.float32)
    if F64:
        return v.to(tl.float64)
    else:
        return v.to(tl.float32)


@triton.jit
def _rounded(v, dtype: tl.constexpr):
    """``v`` rounded once to the output ``dtype``, to nearest (even)."""
    if dtype == tl.bfloat16:
        return _to_bf16(v)
    else:  # float16: cvt.rn on the GPU, NumPy's cast in the interpreter
        return v.to(dtype)


@triton.jit
def _to_bf16(v):
    """float32 ``v`` to bfloat16, to nearest even (the interpreter's casts truncate)."""
    if _INTERPRET:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        v = tl.where(v != v, v, bits.to(tl.float32, bitcast=True))
        return v.to(tl.bfloat16)  # exact now
    else:
        return v.to(tl.bfloat16, fp_downcast_rounding="rtne")


@triton.jit
def _stats(z):
    """``(m, r, nan count, +inf count)`` of one chunk (NaN and +inf kept out of ``(m, r)``)."""
    is_nan = z != z
    is_pinf = z == float("inf")
    zf = tl.where(is_nan | is_pinf, float("-inf"), z)
    m = tl.max(zf, 0)
    none = m == float("-inf")
    is_max = zf == m
    e = _exp(zf - tl.where(none, 0.0, m))
    count = tl.sum(is_max.to(tl.int32), 0).to(z.dtype)
    r = tl.sum(tl.where(is_max, 0.0, e), 0) + (count - 1.0)
    r = tl.where(none, -1.0, r)
    n_nan = tl.sum(is_nan.to(tl.int32), 0)
    n_inf = tl.sum(is_pinf.to(tl.int32), 0)
    return m, r, n_nan, n_inf


@triton.jit
def _merge(m1, r1, m2, r2):
    """The pair of two chunks: the larger maximum's rest plus the other, rescaled."""
    first = m1 >= m2
    hi = tl.maximum(m1, m2)
    lo = tl.minimum(m1, m2)
    r_hi = tl.where(first, r1, r2)
    r_lo = tl.where(first, r2, r1)
    nothing = lo == float("-inf")  # then exp(lo - hi) is 0 (or -inf - -inf)
    scale = tl.where(nothing, 0.0, _exp(lo - tl.where(nothing, 0.0, hi)))
    return hi, r_hi + (1.0 + r_lo) * scale


@triton.jit
def _row_stats(
    X,
    W,
    T,
    bx,
    bw,
    bt,
    cols,
    N,
    sx_n,
    sw_n,
    st_n,
    t_scalar,
    NEGATE: tl.constexpr,
    HAS_W: tl.constexpr,
    T_MODE: tl.constexpr,
    IS_INT: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """The pair and the counts of a long row, chunk by chunk (one read)."""
    z, _ = _load_z(
        X, W, T, bx, bw, bt, cols, N, sx_n, sw_n, st_n, t_scalar,
        NEGATE, HAS_W, T_MODE, IS_INT, ROUND, F64,
    )  # fmt: skip
    m, r, n_nan, n_inf = _stats(z)
    for start in range(BLOCK, N, BLOCK):
        z, _ = _load_z(
            X, W, T, bx, bw, bt, cols + start, N, sx_n, sw_n, st_n, t_scalar,
            NEGATE, HAS_W, T_MODE, IS_INT, ROUND, F64,
        )  # fmt: skip
        m2, r2, a, b = _stats(z)
        m, r = _merge(m, r, m2, r2)
        n_nan += a
        n_inf += b
    return m, r, n_nan, n_inf


@triton.jit
def _softmax_out(z, keep, m, r, n_nan, n_inf, LOG: tl.constexpr):
    """softmax (``LOG``: log_softmax) of a chunk from its row's pair and counts."""
    none = m == float("-inf")
    zs = z - tl.where(none, 0.0, m)
    r = tl.where(none, 0.0, r)
    k = n_inf.to(z.dtype)
    at_inf = z == float("inf")
    if LOG:
        normal = zs - _log1p(r)
        special = tl.where(at_inf, -_log1p(tl.maximum(k - 1.0, 0.0)), float("-inf"))
        empty = float("-inf")
    else:
        normal = _div(_exp(zs), tl.zeros_like(zs) + (1.0 + r))
        k_safe = tl.maximum(k, 1.0)
        special = tl.where(
            at_inf, _div(tl.zeros_like(zs) + 1.0, k_safe + tl.zeros_like(zs)), 0.0
        )
        empty = 0.0
    y = tl.where(n_inf > 0, special, normal)
    y = tl.where(none & (n_inf == 0), empty, y)
    y = tl.where(n_nan > 0, float("nan"), y)
    return tl.where(keep, y, empty)


@triton.jit
def _forward(
    X,
    W,
    T,
    Y,
    STAT,
    N,
    INNER,
    sx_o,
    sx_n,
    sx_i,
    sw_o,
    sw_n,
    sw_i,
    st_o,
    st_n,
    st_i,
    sy_o,
    sy_n,
    sy_i,
    t_scalar: "fp64",
    KIND: tl.constexpr,
    NEGATE: tl.constexpr,
    HAS_W: tl.constexpr,
    T_MODE: tl.constexpr,
    IS_INT: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
    WRITE_STAT: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE: tl.constexpr,
):
    """softmax (KIND 0), log_softmax (1) or logsumexp (2) of one row per program."""
    pid = tl.program_id(0).to(tl.int64)
    o = pid // INNER
    i = pid % INNER
    bx = o * sx_o + i * sx_i
    bw = o * sw_o + i * sw_i
    bt = o * st_o + i * st_i
    by = o * sy_o + i * sy_i
    cols = tl.arange(0, BLOCK)
    if SINGLE:
        z, keep = _load_z(
            X, W, T, bx, bw, bt, cols, N, sx_n, sw_n, st_n, t_scalar,
            NEGATE, HAS_W, T_MODE, IS_INT, ROUND, F64,
        )  # fmt: skip
        m, r, n_nan, n_inf = _stats(z)
    else:
        m, r, n_nan, n_inf = _row_stats(
            X, W, T, bx, bw, bt, cols, N, sx_n, sw_n, st_n, t_scalar,
            NEGATE, HAS_W, T_MODE, IS_INT, ROUND, F64, BLOCK,
        )  # fmt: skip
    if KIND == 2 or (KIND == 1 and WRITE_STAT):
        finite = m + _log1p(tl.where(m == float("-inf"), 0.0, r))
        lse = tl.where(m == float("-inf"), float("-inf"), finite)
        lse = tl.where(n_inf > 0, float("inf"), lse)
        lse = tl.where(n_nan > 0, float("nan"), lse)
        if WRITE_STAT:
            tl.store(STAT + pid, lse)
    if KIND == 2:
        tl.store(Y + by, _rounded(lse, Y.dtype.element_ty))
    else:
        if KIND == 0 and WRITE_STAT:
            status = tl.where(m == float("-inf"), 3, 0)
            status = tl.where(n_inf > 0, 2, status)
            status = tl.where(n_nan > 0, 1, status)
            tl.store(STAT + pid, status.to(tl.int8))
        if SINGLE:
            y = _softmax_out(z, keep, m, r, n_nan, n_inf, KIND == 1)
            tl.store(
                Y + by + cols * sy_n, _rounded(y, Y.dtype.element_ty), mask=cols < N
            )
        else:
            for start in range(0, N, BLOCK):
                z, keep = _load_z(
                    X, W, T, bx, bw, bt, cols + start, N, sx_n, sw_n, st_n, t_scalar,
                    NEGATE, HAS_W, T_MODE, IS_INT, ROUND, F64,
                )  # fmt: skip
                y = _softmax_out(z, keep, m, r, n_nan, n_inf, KIND == 1)
                c = cols + start
                tl.store(Y + by + c * sy_n, _rounded(y, Y.dtype.element_ty), mask=c < N)


@triton.jit
def _load_bwd(
    Y,
    G,
    W,
    by,
    bg,
    bw,
    cols,
    N,
    sy_n,
    sg_n,
    sw_n,
    HAS_W: tl.constexpr,
    F64: tl.constexpr,
    LOAD_Y: tl.constexpr,
    DROP_INF: tl.constexpr,
):
    """``(y, g, keep)`` of one chunk in the compute dtype; ``g`` is 0 where not kept.

    Without ``LOAD_Y``, ``y`` is not read (``g`` stands in for it). With
    ``DROP_INF``, ``g`` is 0 where ``y`` is infinite too: the generic core
    rounds a float32 result to half precision through a clamp whose
    infinite branch is a constant, so those cotangents go no further.
    """
    keep = cols < N
    if HAS_W:
        keep = keep & (tl.load(W + bw + cols * sw_n, mask=keep, other=0) != 0)
    g = _convert(tl.load(G + bg + cols * sg_n, mask=keep, other=0), False, 0, F64)
    g = tl.where(keep, g, 0.0)
    if LOAD_Y or DROP_INF:
        y = _convert(tl.load(Y + by + cols * sy_n, mask=keep, other=0), False, 0, F64)
        if DROP_INF:
            g = tl.where(tl.abs(y) == float("inf"), 0.0, g)
    else:
        y = g
    return y, g, keep


@triton.jit
def _dz_dx(
    gx,
    X,
    bx,
    cols,
    keep,
    sx_n,
    t_scalar,
    T,
    bt,
    st_n,
    NEGATE: tl.constexpr,
    T_MODE: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
):
    """``gx`` times ``dz/dx``: ``-1`` for softmin, ``1/t`` where ``x`` is finite."""
    if NEGATE:
        gx = -gx
    if T_MODE != 0:
        x = _convert(
            tl.load(X + bx + cols * sx_n, mask=keep, other=0), False, ROUND, F64
        )
        if T_MODE == 1:
            t = _scalar_t(t_scalar, gx)
        else:
            t = _convert(
                tl.load(T + bt + cols * st_n, mask=keep, other=1), True, 0, F64
            )
        finite = tl.abs(x) < float("inf")
        gx = tl.where(finite, _div(gx, tl.where(finite, t, 1.0)), gx)
    return gx


@triton.jit
def _softmax_backward(
    Y,
    G,
    W,
    X,
    T,
    GX,
    STAT,
    N,
    INNER,
    sy_o,
    sy_n,
    sy_i,
    sg_o,
    sg_n,
    sg_i,
    sw_o,
    sw_n,
    sw_i,
    sx_o,
    sx_n,
    sx_i,
    st_o,
    st_n,
    st_i,
    sgx_o,
    sgx_n,
    sgx_i,
    t_scalar: "fp64",
    LOG: tl.constexpr,
    NEGATE: tl.constexpr,
    HAS_W: tl.constexpr,
    T_MODE: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
    HALF_OUT: tl.constexpr,
    BLOCK: tl.constexpr,
    SINGLE: tl.constexpr,
):
    """softmax's ``y * (g - sum(g y))`` (``LOG``: ``g - exp(z - lse) sum(g)``), times ``dz/dx``."""
    pid = tl.program_id(0).to(tl.int64)
    o = pid // INNER
    i = pid % INNER
    by = o * sy_o + i * sy_i
    bg = o * sg_o + i * sg_i
    bw = o * sw_o + i * sw_i
    bx = o * sx_o + i * sx_i
    bt = o * st_o + i * st_i
    bgx = o * sgx_o + i * sgx_i
    cols = tl.arange(0, BLOCK)
    stat = tl.load(STAT + pid)
    if LOG:  # the row's logsumexp: NaN, +-inf for the special rows
        nan_row = stat != stat
        zero_row = tl.abs(stat) == float("inf")
        lse = tl.where(nan_row | zero_row, 0.0, stat)
    else:  # the row's status
        nan_row = stat == 1
        zero_row = stat > 1
    y, g, keep = _load_bwd(
        Y,
        G,
        W,
        by,
        bg,
        bw,
        cols,
        N,
        sy_n,
        sg_n,
        sw_n,
        HAS_W,
        F64,
        not LOG,
        LOG and HALF_OUT,
    )
    if LOG:
        dot = tl.sum(g, 0)
    else:
        dot = tl.sum(g * y, 0)
    if not SINGLE:
        for start in range(BLOCK, N, BLOCK):
            y2, g2, _ = _load_bwd(
                Y,
                G,
                W,
                by,
                bg,
                bw,
                cols + start,
                N,
                sy_n,
                sg_n,
                sw_n,
                HAS_W,
                F64,
                not LOG,
                LOG and HALF_OUT,
            )
            if LOG:
                dot += tl.sum(g2, 0)
            else:
                dot += tl.sum(g2 * y2, 0)
    for start in range(0, N, BLOCK):
        if not SINGLE:
            y, g, keep = _load_bwd(
                Y,
                G,
                W,
                by,
                bg,
                bw,
                cols + start,
                N,
                sy_n,
                sg_n,
                sw_n,
                HAS_W,
                F64,
                not LOG,
                LOG and HALF_OUT,
            )
        c = cols + start
        if LOG:
            # p from x and the row's logsumexp: exp of a half-precision y
            # would carry its rounding, |y| half ulps, into p
            z, _ = _load_z(
                X, W, T, bx, bw, bt, c, N, sx_n, sw_n, st_n, t_scalar,
                NEGATE, HAS_W, T_MODE, False, ROUND, F64,
            )  # fmt: skip
            gx = g - _exp(z - lse) * dot
        else:
            gx = y * (g - dot)
        gx = _dz_dx(
            gx, X, bx, c, keep, sx_n, t_scalar, T, bt, st_n, NEGATE, T_MODE, ROUND, F64
        )
        gx = tl.where(nan_row, float("nan"), tl.where(zero_row, 0.0, gx))
        gx = tl.where(keep, gx, 0.0)
        tl.store(GX + bgx + c * sgx_n, _rounded(gx, GX.dtype.element_ty), mask=c < N)


@triton.jit
def _lse_backward(
    X,
    W,
    G,
    STAT,
    GX,
    N,
    INNER,
    sx_o,
    sx_n,
    sx_i,
    sw_o,
    sw_n,
    sw_i,
    sg_o,
    sg_i,
    sgx_o,
    sgx_n,
    sgx_i,
    HAS_W: tl.constexpr,
    ROUND: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """logsumexp's ``g_row * exp(z - lse)``: 0 where masked and for infinite ``lse``."""
    pid = tl.program_id(0).to(tl.int64)
    o = pid // INNER
    i = pid % INNER
    bx = o * sx_o + i * sx_i
    bw = o * sw_o + i * sw_i
    bgx = o * sgx_o + i * sgx_i
    cols = tl.arange(0, BLOCK)
    lse = tl.load(STAT + pid)
    g = _convert(tl.load(G + o * sg_o + i * sg_i), False, 0, F64)
    finite = tl.abs(lse) < float("inf")
    lse_safe = tl.where(finite, lse, 0.0)
    for start in range(0, N, BLOCK):
        c = cols + start
        z, keep = _load_z(
            X, W, X, bx, bw, 0, c, N, sx_n, sw_n, 0, 0.0,
            False, HAS_W, 0, False, ROUND, F64,
        )  # fmt: skip
        p = _exp(tl.where(finite, z, float("-inf")) - lse_safe)
        gx = tl.where(lse != lse, float("nan"), g * p)
        gx = tl.where(keep, gx, 0.0)
        tl.store(GX + bgx + c * sgx_n, _rounded(gx, GX.dtype.element_ty), mask=c < N)


# ---------------------------------------------------------------------------
# layout and launch parameters

Strides = tuple[int, int, int]


def _merged_stride(sizes: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """The one stride of ``sizes`` merged into a dimension, or ``None`` if a view cannot."""
    merged: int | None = None
    expected = 0
    for n, s in zip(reversed(sizes), reversed(strides), strict=True):
        if n == 1:
            continue
        if merged is None:
            merged = s
        elif s != expected:
            return None
        expected = s * n
    return 0 if merged is None else merged


def _layout(
    shape: tuple[int, ...], strides: tuple[int, ...], a0: int, a1: int
) -> Strides | None:
    """The ``(outer, N, inner)`` strides of a tensor reduced over axes ``a0..a1``, or ``None``."""
    out = []
    for lo, hi in ((0, a0), (a0, a1 + 1), (a1 + 1, len(shape))):
        s = _merged_stride(shape[lo:hi], strides[lo:hi])
        if s is None:
            return None
        out.append(s)
    return out[0], out[1], out[2]


def _sizes(shape: tuple[int, ...], a0: int, a1: int) -> tuple[int, int, int]:
    return (
        math.prod(shape[:a0]),
        math.prod(shape[a0 : a1 + 1]),
        math.prod(shape[a1 + 1 :]),
    )


def _blocks(n: int, f64: bool) -> tuple[int, bool, int]:
    """``(BLOCK, SINGLE, num_warps)`` for rows of ``n`` entries.

    Up to :data:`_SINGLE_MAX` entries a row is one block of the next power of
    two; longer rows loop over chunks of :data:`_CHUNK`. One warp per 256
    entries (8 values per thread and array), at most 16 warps.
    """
    single = n <= _SINGLE_MAX[f64]
    block = max(_MIN_BLOCK, triton.next_power_of_2(n)) if single else _CHUNK[f64]
    return block, single, min(16, max(1, block // 256))


def _grad(a: Any) -> bool:
    return isinstance(a, torch.Tensor) and torch.is_grad_enabled() and a.requires_grad


# ---------------------------------------------------------------------------
# the custom ops (torch.compile keeps them whole) and their autograd


def _forward_impl(
    x: torch.Tensor,
    where: torch.Tensor | None,
    temperature: torch.Tensor | None,
    t_scalar: float,
    a0: int,
    a1: int,
    kind: int,
    negate: bool,
    round_code: int,
    out_dtype: torch.dtype,
    need_stat: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, stat)``: the result and, if ``need_stat``, the per-row value the backward needs.

    ``stat``: softmax a status byte per row (1 NaN, 2 ``+inf``, 3 nothing
    left); log_softmax and logsumexp the row's logsumexp in the compute dtype.
    """
    shape = tuple(x.shape)
    outer, n, inner = _sizes(shape, a0, a1)
    f64 = out_dtype == torch.float64
    sx = _layout(shape, tuple(x.stride()), a0, a1)
    sw = (0, 0, 0) if where is None else _layout(shape, tuple(where.stride()), a0, a1)
    st = (
        (0, 0, 0)
        if temperature is None
        else _layout(shape, tuple(temperature.stride()), a0, a1)
    )
    assert sx is not None  # run() checked
    assert sw is not None
    assert st is not None
    if kind == 2:
        y = torch.empty(shape[:a0] + shape[a1 + 1 :], dtype=out_dtype, device=x.device)
        sy = (inner, 0, 1)
        stat_dtype = torch.float64 if f64 else torch.float32
    else:
        y = torch.empty(shape, dtype=out_dtype, device=x.device)
        sy = (n * inner, inner, 1)
        stat_dtype = (
            torch.int8 if kind == 0 else (torch.float64 if f64 else torch.float32)
        )
    rows = outer * inner
    stat = torch.empty(rows if need_stat else 0, dtype=stat_dtype, device=x.device)
    block, single, warps = _blocks(n, f64)
    t_mode = 2 if temperature is not None else (1 if t_scalar > 0 else 0)
    _launch(
        _forward,
        rows,
        x,
        x,
        x if where is None else where,
        x if temperature is None else temperature,
        y,
        stat if need_stat else y,
        n,
        inner,
        *sx,
        *sw,
        *st,
        *sy,
        t_scalar,
        KIND=kind,
        NEGATE=negate,
        HAS_W=where is not None,
        T_MODE=t_mode,
        IS_INT=not (x.is_floating_point()),
        ROUND=round_code,
        F64=f64,
        WRITE_STAT=need_stat,
        BLOCK=block,
        SINGLE=single,
        num_warps=warps,
    )
    return y, stat


def _softmax_backward_impl(
    y: torch.Tensor,
    g: torch.Tensor,
    stat: torch.Tensor,
    where: torch.Tensor | None,
    x: torch.Tensor,
    temperature: torch.Tensor | None,
    t_scalar: float,
    a0: int,
    a1: int,
    log: bool,
    negate: bool,
    round_code: int,
) -> torch.Tensor:
    """The gradient of softmax / log_softmax with respect to ``x``, from ``y`` and ``g``."""
    shape = tuple(y.shape)
    outer, n, inner = _sizes(shape, a0, a1)
    f64 = y.dtype == torch.float64
    sg = _layout(shape, tuple(g.stride()), a0, a1)
    if sg is None:  # a cotangent laid out otherwise: one copy
        g = g.contiguous()
        sg = (n * inner, inner, 1)
    sy = (n * inner, inner, 1)
    sx = _layout(shape, tuple(x.stride()), a0, a1)
    sw = (0, 0, 0) if where is None else _layout(shape, tuple(where.stride()), a0, a1)
    st = (
        (0, 0, 0)
        if temperature is None
        else _layout(shape, tuple(temperature.stride()), a0, a1)
    )
    assert sx is not None
    assert sw is not None
    assert st is not None
    gx = torch.empty(shape, dtype=x.dtype, device=x.device)
    block, single, warps = _blocks(n, f64)
    t_mode = 2 if temperature is not None else (1 if t_scalar > 0 else 0)
    _launch(
        _softmax_backward,
        outer * inner,
        y,
        y,
        g,
        y if where is None else where,
        x,
        y if temperature is None else temperature,
        gx,
        stat,
        n,
        inner,
        *sy,
        *sg,
        *sw,
        *sx,
        *st,
        n * inner,
        inner,
        1,
        t_scalar,
        LOG=log,
        NEGATE=negate,
        HAS_W=where is not None,
        T_MODE=t_mode,
        ROUND=round_code,
        F64=f64,
        HALF_OUT=y.dtype in (torch.float16, torch.bfloat16),
        BLOCK=block,
        SINGLE=single,
        num_warps=warps,
    )
    return gx


def _lse_backward_impl(
    x: torch.Tensor,
    where: torch.Tensor | None,
    g: torch.Tensor,
    stat: torch.Tensor,
    a0: int,
    a1: int,
    round_code: int,
) -> torch.Tensor:
    """The gradient of logsumexp with respect to ``x``, from the row results ``stat``."""
    shape = tuple(x.shape)
    outer, n, inner = _sizes(shape, a0, a1)
    f64 = stat.dtype == torch.float64
    g = g.reshape(outer, inner)  # R entries: a copy, if any, is small
    sx = _layout(shape, tuple(x.stride()), a0, a1)
    sw = (0, 0, 0) if where is None else _layout(shape, tuple(where.stride()), a0, a1)
    assert sx is not None
    assert sw is not None
    gx = torch.empty(shape, dtype=x.dtype, device=x.device)
    block, _, warps = _blocks(n, f64)
    _launch(
        _lse_backward,
        outer * inner,
        x,
        x,
        x if where is None else where,
        g,
        stat,
        gx,
        n,
        inner,
        *sx,
        sw[0],
        sw[1],
        sw[2],
        g.stride(0),
        g.stride(1),
        n * inner,
        inner,
        1,
        HAS_W=where is not None,
        ROUND=round_code,
        F64=f64,
        BLOCK=min(block, _CHUNK[f64]),
        num_warps=min(warps, 8),
    )
    return gx


def _launch(
    kernel: Any, rows: int, probe: torch.Tensor, *args: Any, **kwargs: Any
) -> None:
    """``kernel`` on a grid of ``rows`` programs (``wrap_triton``: traceable by ``torch.compile``).

    The interpreter's kernels cannot be traced: there the ops are opaque
    custom ops whose fake implementation is the same function, and the launch
    is skipped on fake tensors (shapes and dtypes are all a trace needs).
    """
    if _INTERPRET and is_fake(probe):
        return
    torch.library.wrap_triton(kernel)[(rows,)](*args, **kwargs)


def _custom_op(name: str, fn: Any) -> Any:
    """``fn`` as the custom op ``softmax_xp::name``: a ``triton_op``, or opaque in the interpreter."""
    if not _INTERPRET:
        return torch.library.triton_op(f"softmax_xp::{name}", fn, mutates_args=())
    op = torch.library.custom_op(f"softmax_xp::{name}", fn, mutates_args=())
    op.register_fake(fn)
    return op


_forward_op = _custom_op("triton_forward", _forward_impl)
_softmax_backward_op = _custom_op("triton_softmax_backward", _softmax_backward_impl)
_lse_backward_op = _custom_op("triton_lse_backward", _lse_backward_impl)


def _setup_forward(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, where, temperature, t_scalar, a0, a1, kind, negate, round_code, out_dtype, _ = (
        inputs
    )
    y, stat = output
    ctx.meta = (t_scalar, a0, a1, kind, negate, round_code, out_dtype)
    if kind == 2:
        ctx.save_for_backward(x, where, stat)
    else:
        ctx.save_for_backward(y, stat, where, x, temperature)


def _differentiable_backward(ctx: Any, gy: torch.Tensor) -> torch.Tensor:
    """The gradient again, by torch's autograd through the path without Triton.

    Under ``create_graph=True`` (a double backward) the gradient must be
    differentiable itself, which the backward kernels are not: the call runs
    again on the generic core (``force_generic``, the reference the kernels
    are tested against) and ``torch.autograd.grad`` differentiates it with
    the graph kept.
    """
    import softmax_xp

    t_scalar, a0, a1, kind, negate, _, out_dtype = ctx.meta
    axis = tuple(range(a0, a1 + 1))
    with softmax_xp.force_generic():
        if kind == 2:
            x, where, _ = ctx.saved_tensors
            y = softmax_xp.logsumexp(x, axis=axis, where=where, dtype=out_dtype)
        else:
            _, _, where, x, temperature = ctx.saved_tensors
            if temperature is None and t_scalar > 0:
                temperature = t_scalar
            fn = (
                softmax_xp.softmin
                if negate
                else (softmax_xp.log_softmax if kind == 1 else softmax_xp.softmax)
            )
            y = fn(x, axis=axis, where=where, temperature=temperature, dtype=out_dtype)
        (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
    return cast(torch.Tensor, gx)


def _backward_forward(ctx: Any, gy: torch.Tensor, _gstat: Any) -> tuple[Any, ...]:
    t_scalar, a0, a1, kind, negate, round_code, _ = ctx.meta
    none = (None,) * 10
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        return (_differentiable_backward(ctx, gy), *none)
    if kind == 2:
        x, where, stat = ctx.saved_tensors
        return (_lse_backward_op(x, where, gy, stat, a0, a1, round_code), *none)
    y, stat, where, x, temperature = ctx.saved_tensors
    gx = _softmax_backward_op(
        y,
        gy,
        stat,
        where,
        x,
        temperature,
        t_scalar,
        a0,
        a1,
        kind == 1,
        negate,
        round_code,
    )
    return (gx, *none)


_forward_op.register_autograd(_backward_forward, setup_context=_setup_forward)


# ---------------------------------------------------------------------------
# dispatch


@contextlib.contextmanager
def _on_cpu(enabled: bool = True) -> Iterator[None]:
    """Route CPU tensors to the Triton kernels in this block (tests, ``TRITON_INTERPRET=1``)."""
    from . import torch as fast_torch

    previous = fast_torch._triton_on_cpu
    fast_torch._triton_on_cpu = enabled
    try:
        yield
    finally:
        fast_torch._triton_on_cpu = previous


def run(kind: str, call: Call, **opts: Any) -> Any:
    """The Triton kernels for ``call``, or ``NotImplemented`` for what they do not cover."""
    x = call.x
    axes = call.axes
    if call.empty or not axes or axes[-1] - axes[0] != len(axes) - 1:
        return NotImplemented
    if kind == "logsumexp" and (call.b is not None or opts["return_sign"]):
        return NotImplemented
    if x.is_complex() or (x.is_floating_point() and x.dtype not in _FLOATS):
        return NotImplemented
    if call.out_dtype not in _FLOATS:
        return NotImplemented
    if not torch.compiler.is_compiling() and (
        type(x) is not torch.Tensor or (_is_wrapped is not None and _is_wrapped(x))
    ):
        return NotImplemented
    shape = tuple(call.shape)
    a0, a1 = axes[0], axes[-1]
    if tuple(x.shape) != shape or _layout(shape, tuple(x.stride()), a0, a1) is None:
        return NotImplemented
    where = call.where
    if where is not None:
        where = torch.broadcast_to(where, shape)
        if _layout(shape, tuple(where.stride()), a0, a1) is None:
            return NotImplemented
    t = call.temperature
    t_scalar, t_array = 0.0, None
    if isinstance(t, float):
        t_scalar = t
    elif t is not None:
        if _grad(t):
            return NotImplemented
        t_array = torch.broadcast_to(t, shape)
        if _layout(shape, tuple(t_array.stride()), a0, a1) is None:
            return NotImplemented
    src = x.dtype if x.is_floating_point() else call.compute_dtype
    round_code = _ROUND.get(input_rounding(call, src), 0)
    y, _ = _forward_op(
        x,
        where,
        t_array,
        t_scalar,
        a0,
        a1,
        _KIND[kind],
        bool(opts.get("negate", False)),
        round_code,
        call.out_dtype,
        _grad(x),
    )
    if kind == "logsumexp" and opts["keepdims"]:
        y = y.reshape(tuple(1 if a0 <= d <= a1 else n for d, n in enumerate(shape)))
    return y
