"""PyTorch: torch's fused kernels, plus the least extra work that keeps the contract.

``torch.softmax`` and ``torch.log_softmax`` are one fused pass per row, but they
miss the contract in four places: a row with ``+inf`` or with nothing left
comes out all NaN; they have no integer kernels and take one ``dim`` only;
``log_softmax`` computes ``log(S)`` where the contract needs ``log1p(s')``, so
the largest log-probability of a peaked row loses its relative precision; and
on the CPU their row sum is a sequential accumulation (per vector lane) whose
error grows with the row: measured up to 5-8 ulp on rows of 1024 and ~14 on
rows of 20000, and 6-33 ulp along a non-last dim, where the cascade sum of
``torch.sum`` stays within 2-3 ulp. ``torch.logsumexp`` is a composite of four
full passes (max, subtract, exp, sum) without the log1p form.

Two formulations:

- **CPU tensors, eagerly**, where reading a flag back costs nothing: run the
  fused kernel, then one read of its output says which rows need more.
  softmax: the row sums ``c`` of the output (cascade-accurate); NaN marks a
  special row, ``|c - 1| > eps`` a row whose sum drifted, which is divided by
  ``c`` (so the fast path keeps 4 ulp; half-precision outputs skip this: the
  float32 drift is far below their rounding, and a special row is found from
  one column, NaN in every entry). log_softmax: the row maxima of the output,
  ``-log(S)``; NaN marks a special row, a small ``log(S)`` a peaked row whose
  largest entries need the log1p form (or whose drift matters), recomputed
  exactly. Along a non-last dim the fused log_softmax drifts too far to be
  checked, and the exact composite runs instead. logsumexp: always the
  composite. The composites run slab by slab (4 MiB at a time: max, shift,
  exp into a slab buffer, sum, subtract), never allocating a full-size
  temporary (a fresh 64 MiB costs half of the fused kernel's whole call in
  page faults; logsumexp is 2x faster than ``torch.logsumexp`` for it);
  where a slab has a row with ``S < 2`` (one maximum, the only ``exp`` equal
  to 1), ``frac`` in place (``frac(1) = 0``) takes the maximum out of the sum.
  Special rows (``+inf``, NaN, nothing left) are recomputed by the
  branch-free formulation, only those rows. Under autograd the same runs as
  the forward of an ``autograd.Function`` whose backward is torch's own
  softmax / log_softmax backward of the fixed output (0 for special rows, as
  in the generic core; differentiable again, so double backward works), so
  the fix-ups stay in place there too.
- **Everything else** (CUDA and other devices, ``torch.compile``, functorch
  transforms, tensor subclasses): branch-free, no host synchronisation. The
  row max ``m`` is taken first; softmax feeds the fused kernel ``where(finite
  m, x, 0)`` (so no NaN reaches its backward) and selects the contract's values
  for the rows whose ``m`` is not finite (on CPU tensors it also divides by
  the row sums, for the drift above); log_softmax and logsumexp use the generic
  core's formulas (``z`` rebuilt from comparisons for special rows, log1p).

Measured on 4096 x 4096 float32, last axis (2-core Xeon shared with other
jobs; medians of 15-21 interleaved rounds, ratio to the fused call at the same
thread count, 1 / 2 threads): softmax x1.15 / x1.13 (the row-sum read alone
x1.06-1.14, dividing the drifted rows, 6% of them in float32, 22% in float64,
the rest); log_softmax x1.15 / x1.18 (the row-max read); logsumexp x0.48 /
x0.41 of ``torch.logsumexp``. Peaked rows cost more: log_softmax with every
row peaked x1.45-2.2, with 1/8 of them x1.0-1.5; one row with nothing left
x1.0-1.7. With two threads every extra operation also waits for the pool,
which on a loaded machine can cost more than the work (slab loops, 10-60
operations, suffer most).

Tuple axes are merged into one dimension (``flatten``, a view when the axes are
adjacent); non-adjacent axes, ``axis=()``, empty arrays and the weighted,
signed and complex logsumexp go to the generic core (an empty result is tied
to the inputs' autograd graph, as torch's own functions keep it). A ``dtype=``
that rounds (narrowing, or integers) is applied to ``x`` first, so values
beyond its range are +-inf (DESIGN §2); half precision then runs the
fused kernels with ``dtype=torch.float32`` and is rounded once at the end
(torch's rounding turns values beyond the half range into +-inf, as the
generic core does). Masked outputs are constants under autograd: their
cotangents are dropped before the backward's row sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .._call import Call

__all__ = ["FORCE_BRANCH_FREE", "run"]

# Tests set this to run the branch-free (device) formulation on CPU tensors.
FORCE_BRANCH_FREE = False

_INF = math.inf
_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)

# elements per slab of the composites (4 MiB of float32): small enough to
# spare a full-size temporary, large enough that the intra-op thread pool
# meets for few operations (each is a synchronisation)
_SLAB = 1 << 20

RowFn = Callable[[torch.Tensor, Any], torch.Tensor]


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` on torch tensors, or ``NotImplemented``."""
    if call.empty:
        return NotImplemented  # the generic fill, tied to autograd there (_fill)
    if not call.axes:
        return NotImplemented
    if kind == "logsumexp":
        if call.b is not None or opts["return_sign"] or call.x.is_complex():
            return NotImplemented
        return _logsumexp(call, keepdims=opts["keepdims"])
    axes = call.axes
    if axes[-1] - axes[0] != len(axes) - 1:  # non-adjacent axes: no view merges them
        return NotImplemented
    x = _inputs(call, negate=bool(opts.get("negate", False)))
    where = call.where
    dim = axes[0]
    if len(axes) > 1:
        x = x.flatten(axes[0], axes[-1])
        if where is not None:
            where = torch.broadcast_to(where, call.shape).flatten(axes[0], axes[-1])
    cd = call.compute_dtype
    half_out = call.out_dtype != cd  # rounded to half precision at the end
    if kind == "softmax":
        if _eager(x):
            out = _softmax_cpu(x, dim, where, cd, half_out)
        else:
            out = _softmax_branch_free(x, dim, where, cd, half_out)
    elif _eager(x):
        out = _log_softmax_cpu(x, dim, where, cd, half_out)
    else:
        out = _log_softmax_branch_free(x, (dim,), where, cd)
    if len(axes) > 1:
        out = out.reshape(call.shape)  # splits the merged dim again: a view
    return out if out.dtype == call.out_dtype else out.to(call.out_dtype)


# ---------------------------------------------------------------------------
# inputs and helpers

# (from, to) casts that are exact: left to the compute dtype's cast (or the
# fused kernel's dtype=); any other cast to the output dtype happens first
_WIDENING = frozenset(
    (a, b)
    for a, b in [
        (torch.float16, torch.float32),
        (torch.float16, torch.float64),
        (torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.float64),
        (torch.float32, torch.float64),
    ]
)


def _eager(x: torch.Tensor) -> bool:
    """Whether a data-dependent branch (a host read of a flag) is allowed and cheap."""
    return (
        not FORCE_BRANCH_FREE
        and type(x) is torch.Tensor
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not (_is_wrapped is not None and _is_wrapped(x))
    )


def _grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def _const(value: float, like: torch.Tensor, dtype: Any = None) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype or like.dtype, device=like.device)


def _cast_first(call: Call) -> torch.Tensor:
    """``x`` in the output dtype when that cast rounds (DESIGN: ``dtype=`` casts first).

    Values beyond a narrower range become +-inf here, as IEEE rounds, and the
    contract's rules for them apply (``[1e308, 0]`` to float32 gives ``[1, 0]``);
    integers become the output dtype (half precision: +-inf beyond its range).
    """
    x: torch.Tensor = call.x
    out = call.out_dtype
    if call.func.startswith("logsumexp") and out in (torch.float16, torch.bfloat16):
        out = torch.float32  # a reduction rounds once at the end (generic _to_compute)
    if x.dtype == out or (x.dtype, out) in _WIDENING or x.is_complex():
        return x
    return x.to(out)


def _inputs(call: Call, *, negate: bool) -> torch.Tensor:
    """``x`` masked, negated and divided by the temperature, as the generic ``_inputs``.

    The operations are those of the generic core, in its order, so the values
    are bitwise the same. Half precision with nothing to compute is left for
    the fused kernel to widen (``dtype=float32``, no extra pass); otherwise the
    result is in the compute dtype.
    """
    x = _cast_first(call)
    cd = call.compute_dtype
    if not x.is_floating_point():  # ints and bools hold no NaN: cast, then mask
        x = x.to(cd)
    if call.where is not None:
        x = torch.where(call.where, x, _INF if negate else -_INF)
    t = call.temperature
    if t is None and not negate:
        return x
    x = x.to(cd)
    if isinstance(t, float):
        # -(x / t) == x / (-t) exactly (rounding is symmetric): one pass for both
        xt = x / (-t if negate else t)
        if _grad(x):
            # as the generic core: +-inf entries pass their gradient unscaled
            return torch.where(torch.isfinite(x), xt, -x if negate else x)
        return xt
    if negate:
        x = -x
    if t is not None:
        t = t.to(cd)
        finite = torch.isfinite(x)
        if _grad(x) or _grad(t) or not _eager(x):
            # as the generic core: no 0 * inf reaches the temperature's gradient,
            # and masked temperatures are never divided by
            x_safe = torch.where(finite, x, _const(0.0, x))
            t_safe = torch.where(finite, t, _const(1.0, x))
            xt = x_safe / t_safe
            if _grad(x) or _grad(t):
                # a quotient that overflows to +-inf is a constant input (an
                # inf entry): its backward, -g * (x / t) / t, would be 0 * inf
                fits = torch.isfinite(xt)
                xt = torch.where(
                    fits,
                    torch.where(fits, x_safe, _const(0.0, x))
                    / torch.where(fits, t_safe, _const(1.0, x)),
                    xt.detach(),
                )
            x = torch.where(finite, xt, x)
        else:  # the same values with one temporary: divide, restore the non-finite
            xt = x / t
            x = torch.where(finite, xt, x, out=xt)
    return x


def _fused_dtype(x: torch.Tensor, cd: Any) -> Any:
    return cd if x.dtype != cd else None


def _as_rows(t: torch.Tensor, dim: int) -> torch.Tensor | None:
    """``t`` as a ``(rows, n)`` view when ``dim`` is its last, contiguous axis.

    Integer-indexed row copies (``index_select``/``index_copy_``) on it cost a
    few percent of a boolean-mask ``t[rows] = ...`` (measured 1 ms against 8).
    """
    if dim != t.ndim - 1 or not t.is_contiguous():
        return None
    return t.view(-1, t.shape[-1])


def _redo_rows(
    y: torch.Tensor,
    x: torch.Tensor,
    dim: int,
    rows: torch.Tensor,
    fn: RowFn,
    where: Any,
) -> bool:
    """Overwrite the marked rows of ``y`` with ``fn`` of those rows of ``x``.

    ``fn(x_rows, where_rows)`` maps a ``(k, n)`` tensor to its ``(k, n)``
    result. False (nothing done) when ``y`` has no plain row layout.
    """
    y2 = _as_rows(y, dim)
    if y2 is None:
        return False
    idx = torch.nonzero(rows.reshape(-1)).squeeze(1)
    w = None
    if where is not None:
        w = _row_select(torch.broadcast_to(where, x.shape), dim, idx)
    y2.index_copy_(0, idx, fn(_row_select(x, dim, idx), w).to(y.dtype))
    return True


def _row_select(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``t`` (reduced over its last axis) as a ``(k, n)`` tensor."""
    t2 = _as_rows(t, dim)
    if t2 is None:  # a strided view: the row layout needs one copy
        t2 = t.reshape(-1, t.shape[dim])
    return t2.index_select(0, idx)


def _slabs(shape: Any, dims: tuple[int, ...]) -> Iterator[tuple[Any, ...]]:
    """Index tuples cutting ``shape`` into slabs along its longest unreduced axis."""
    others = [a for a in range(len(shape)) if a not in dims]
    if not others:
        yield (Ellipsis,)
        return
    ax = max(others, key=lambda a: int(shape[a]))
    per = max(1, _SLAB * int(shape[ax]) // max(1, math.prod(shape)))
    for start in range(0, int(shape[ax]), per):
        yield (*(slice(None),) * ax, slice(start, start + per))


def _log1p_arg(e: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``s'`` from the sums of ``e = exp(x - m)`` over ``dims``; ``e`` may be overwritten.

    ``S - 1`` is exact enough once ``S >= 2``. A slice with ``S < 2`` has one
    maximum, its ``exp`` the only 1 of the slice (a second 1 would make
    ``S >= 2``), so ``frac`` (which maps 1 to 0 and keeps the rest) takes it out
    of the sum; the count of ones ``k`` is the rounded difference of the sums.
    """
    total = e.sum(dims, keepdim=True)
    if not bool((total < 2).any()):
        return total - 1
    rest = e.frac_().sum(dims, keepdim=True)
    return rest + (torch.round(total - rest) - 1)


def _shifted_slab(
    xs: torch.Tensor, dims: tuple[int, ...], shift: torch.Tensor, e: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One slab of the composite, no autograd: ``(m, m or 0, s')``.

    Writes ``shift = x - (m or 0)``, formed in the compute dtype of ``shift``
    (half input: float32, as the generic core), and ``e = exp(shift)``, which
    ``s'`` then overwrites; ``e`` may be ``shift`` itself.
    """
    m = torch.amax(xs, dims, keepdim=True)
    m_safe = torch.where(torch.isfinite(m), m, _const(0.0, m)).to(shift.dtype)
    if xs.dtype == shift.dtype:
        torch.sub(xs, m_safe, out=shift)
    else:
        shift.copy_(xs)
        shift.sub_(m_safe)
    torch.exp(shift, out=e)
    return m, m_safe, _log1p_arg(e, dims)


# ---------------------------------------------------------------------------
# softmax


def _softmax_cpu(
    x: torch.Tensor, dim: int, where: Any, cd: Any, half_out: bool
) -> torch.Tensor:
    if _grad(x):
        return _with_grad(x, False, dim, where, cd, half_out)
    return _softmax_nograd(x, dim, where, cd, half_out)[0]


def _softmax_nograd(
    x: torch.Tensor, dim: int, where: Any, cd: Any, half_out: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fused softmax and its fix-ups, in place; also the special rows, if any."""
    y = torch.softmax(x, dim, dtype=_fused_dtype(x, cd))
    if half_out:
        bad = torch.isnan(y.narrow(dim, 0, 1))
    else:
        c = y.sum(dim, keepdim=True)
        bad = torch.isnan(c)
        drifted = torch.abs(c - 1) > torch.finfo(cd).eps  # False where NaN
        n_drift = int(drifted.sum())
        if n_drift:
            _scale_rows(y, dim, drifted, c, n_drift)
    if not bool(bad.any()):
        return y, None
    if not _redo_rows(y, x, dim, bad, _special_softmax_rows(cd, half_out), where):
        y = _softmax_branch_free(x, dim, where, cd, half_out)
    return y, bad


def _scale_rows(
    y: torch.Tensor, dim: int, drifted: torch.Tensor, c: torch.Tensor, n: int
) -> None:
    """Divide the drifted rows of ``y`` by their sums, in place."""
    y2 = _as_rows(y, dim)
    if y2 is None or 4 * n > drifted.numel():  # most rows: one pass over all
        y.div_(torch.where(drifted, c, _const(1.0, c)))
        return
    idx = torch.nonzero(drifted.reshape(-1)).squeeze(1)  # a few rows: only those
    y2.index_copy_(0, idx, y2.index_select(0, idx).div_(c.reshape(-1, 1)[idx]))


def _special_softmax_rows(cd: Any, half_out: bool) -> RowFn:
    def fn(rows: torch.Tensor, where: Any) -> torch.Tensor:
        return _softmax_branch_free(rows, 1, where, cd, half_out)

    return fn


def _softmax_branch_free(
    x: torch.Tensor, dim: int, where: Any, cd: Any, half_out: bool
) -> torch.Tensor:
    """The fused softmax of the finite rows; the contract's values elsewhere, selected."""
    m = torch.amax(x, dim, keepdim=True)
    ok = torch.isfinite(m)
    # rows whose max is not finite would send NaN through the fused kernel's
    # backward even when discarded: feed it zeros there
    src = torch.where(ok, x, _const(0.0, x)) if _grad(x) else x
    y = torch.softmax(src, dim, dtype=_fused_dtype(x, cd))
    if x.device.type == "cpu" and not half_out:
        # the CPU kernel's row sums drift (module docstring); on a device the
        # kernel's own (tree) reduction is trusted
        y = y / y.sum(dim, keepdim=True).detach()
    # +inf rows: 1/k on their k +inf entries; NaN rows: NaN (masked entries 0);
    # rows with nothing left: 0. m == NaN for finite rows matches nothing.
    hit = x == torch.where(m == _INF, m, _const(math.nan, m))
    k = hit.sum(dim, keepdim=True, dtype=cd)
    fill = torch.where(torch.isnan(m), _const(math.nan, m, cd), _const(0.0, m, cd))
    if where is not None:
        fill = torch.where(where, fill, _const(0.0, fill))
    special = torch.where(hit, 1.0 / k, fill)
    return torch.where(ok, y, special)


# ---------------------------------------------------------------------------
# log_softmax


def _log1p_threshold(n: int, half_out: bool) -> float:
    """Rows whose ``log(S)`` is below this are recomputed exactly.

    The fused kernel's ``-log(S)`` is off by the sum's drift ``d`` (relative)
    plus ``eps`` from rounding ``S = 1 + s'``, and every entry's magnitude is at
    least ``log(S)``: ``log(S) >= 2`` keeps that within ~2 ulp on rows up to
    4096 (measured), and the drift grows like ``sqrt(n)`` beyond. A float32
    result rounded to half precision has 2**13 float32 ulp of room.
    """
    if half_out:
        return 2.0**-5
    return 2.0 * max(1.0, math.sqrt(n / 4096.0))


def _log_softmax_cpu(
    x: torch.Tensor, dim: int, where: Any, cd: Any, half_out: bool
) -> torch.Tensor:
    if _grad(x):
        return _with_grad(x, True, dim, where, cd, half_out)
    return _log_softmax_nograd(x, dim, where, cd, half_out)[0]


def _log_softmax_nograd(
    x: torch.Tensor, dim: int, where: Any, cd: Any, half_out: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The fused log_softmax and its fix-ups, in place; also the special rows, if any."""
    if dim != x.ndim - 1 and not half_out:
        # the fused kernel accumulates sequentially along a non-last dim
        y = torch.empty(x.shape, dtype=cd, device=x.device)
        if _exact_log_softmax_into(x, (dim,), y):
            return y, None
        bad = ~torch.isfinite(torch.amax(x, dim, keepdim=True))
        return _log_softmax_branch_free(x, (dim,), where, cd), bad
    y = torch.log_softmax(x, dim, dtype=_fused_dtype(x, cd))
    top = torch.amax(y, dim, keepdim=True)  # -log(S) per row; NaN: special row
    bad = torch.isnan(top)
    peaked = top > -_log1p_threshold(x.shape[dim], half_out)  # False where NaN
    n_peaked = int(peaked.sum())
    if n_peaked:
        few = 4 * n_peaked <= peaked.numel()
        if not (few and _redo_rows(y, x, dim, peaked, _exact_rows, None)):
            _exact_log_softmax_into(x, (dim,), y)  # special rows: redone below
    if not bool(bad.any()):
        return y, None
    if not _redo_rows(y, x, dim, bad, _special_log_rows(cd), where):
        y = _log_softmax_branch_free(x, (dim,), where, cd)
    return y, bad


def _with_grad(
    x: torch.Tensor, log: bool, dim: int, where: Any, cd: Any, half_out: bool
) -> torch.Tensor:
    out: torch.Tensor = _FromOutput.apply(x, log, dim, where, cd, half_out)  # type: ignore[no-untyped-call]
    return out


class _FromOutput(torch.autograd.Function):
    """The eager fast path under autograd: its output, and the gradient from it.

    The forward runs with the fix-ups in place (no full-size copies); the
    backward is torch's own softmax / log_softmax backward of that output
    (double backward works through it), with 0 for special rows as in the
    generic core, where their values are constants.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        log: bool,
        dim: int,
        where: Any,
        cd: Any,
        half_out: bool,
    ) -> torch.Tensor:
        run = _log_softmax_nograd if log else _softmax_nograd
        y, bad = run(x, dim, where, cd, half_out)
        ctx.log, ctx.dim, ctx.x_dtype = log, dim, x.dtype
        ctx.save_for_backward(y, bad, where)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        y, bad, where = ctx.saved_tensors
        if where is not None:
            # masked outputs are constants: their cotangents must not reach the
            # row sum of the backward (log_softmax's g - exp(y) * sum(g))
            g = torch.where(where, g, _const(0.0, g))
        backward = (
            torch._log_softmax_backward_data
            if ctx.log
            else torch._softmax_backward_data
        )
        gx = backward(g, y, ctx.dim, y.dtype)
        if bad is not None:
            gx = torch.where(bad, _const(0.0, gx), gx)
        return gx.to(ctx.x_dtype), None, None, None, None, None


def _exact_rows(rows: torch.Tensor, _: Any) -> torch.Tensor:
    out = torch.empty(rows.shape, dtype=torch.promote_types(rows.dtype, torch.float32))
    _exact_log_softmax_into(rows, (1,), out)
    return out


def _special_log_rows(cd: Any) -> RowFn:
    def fn(rows: torch.Tensor, where: Any) -> torch.Tensor:
        return _log_softmax_branch_free(rows, (1,), where, cd)

    return fn


def _exact_log_softmax_into(
    x: torch.Tensor, dims: tuple[int, ...], out: torch.Tensor
) -> bool:
    """``out = x - m - log1p(s')`` slab by slab (no autograd).

    Rows whose max is not finite get meaningless values; returns whether
    every row was finite.
    """
    finite = True
    buf: torch.Tensor | None = None
    for piece in _slabs(x.shape, dims):
        xs, os_ = x[piece], out[piece]
        if buf is None or buf.shape != os_.shape:
            buf = torch.empty(os_.shape, dtype=out.dtype, device=out.device)
        m, _, s = _shifted_slab(xs, dims, os_, buf)
        finite = finite and bool(torch.isfinite(m).all())
        os_.sub_(torch.log1p(s))
    return finite


def _shifted(
    x: torch.Tensor, dims: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(m, finite m, m or 0, z, s')`` as the generic core's ``_shift`` and ``_log1p_tail``.

    Rows whose max is not finite get ``z`` rebuilt from comparisons (their
    ``+inf`` entries 0, the rest ``-inf``), so that no NaN or inf reaches
    ``exp`` or the gradient; ``s'`` is 0 where nothing is left.
    """
    zero, ninf = _const(0.0, x), _const(-_INF, x)
    m = torch.amax(x, dims, keepdim=True)
    ok = torch.isfinite(m)
    m_safe = torch.where(ok, m, zero)
    hit = x == torch.where(m == _INF, m, _const(math.nan, m))
    z = torch.where(ok, x - m_safe, torch.where(hit, zero, ninf))
    is_max = z == zero
    k = is_max.sum(dims, keepdim=True, dtype=x.dtype)
    rest = torch.where(is_max, zero, torch.exp(z)).sum(dims, keepdim=True)
    s = torch.where(k > zero, rest + (k - 1), zero)
    return m, ok, m_safe, z, s


def _log_softmax_branch_free(
    x: torch.Tensor, dims: tuple[int, ...], where: Any, cd: Any
) -> torch.Tensor:
    m, _, _, z, s = _shifted(x.to(cd), dims)
    out = z - torch.log1p(s)
    bad = torch.isnan(m)
    if where is not None:
        bad = bad & where
        if _grad(x):
            # masked outputs are constants (the values are already -inf): no
            # cotangent may flow from them into m and s
            out = torch.where(where, out, _const(-_INF, out))
    return torch.where(bad, m.detach(), out)


# ---------------------------------------------------------------------------
# logsumexp


def _logsumexp(call: Call, *, keepdims: bool) -> torch.Tensor:
    x = _cast_first(call)
    cd, dims = call.compute_dtype, call.axes
    if not x.is_floating_point():
        x = x.to(cd)
    if call.where is not None:
        x = torch.where(call.where, x, -_INF)
    if _eager(x) and not _grad(x):
        lse = _lse_cpu(x, dims, cd)
    else:
        m, ok, m_safe, _, s = _shifted(x.to(cd), dims)
        lse = torch.where(ok, m_safe + torch.log1p(s), m.detach())
    if not keepdims:
        lse = lse.squeeze(dims)
    return lse if lse.dtype == call.out_dtype else lse.to(call.out_dtype)


def _lse_cpu(x: torch.Tensor, dims: tuple[int, ...], cd: Any) -> torch.Tensor:
    """The composite slab by slab (one slab-sized buffer); special slices give ``m``."""
    with torch.no_grad():
        shape = [1 if a in dims else n for a, n in enumerate(x.shape)]
        out = torch.empty(shape, dtype=cd, device=x.device)
        buf: torch.Tensor | None = None
        for piece in _slabs(x.shape, dims):
            xs = x[piece]
            if buf is None or buf.shape != xs.shape:
                buf = torch.empty(xs.shape, dtype=cd, device=x.device)
            m, m_safe, s = _shifted_slab(xs, dims, buf, buf)
            # +inf, -inf and NaN slices: their max is the answer
            finite = torch.isfinite(m)
            out[piece] = torch.where(finite, m_safe + torch.log1p(s), m.to(cd))
        return out
