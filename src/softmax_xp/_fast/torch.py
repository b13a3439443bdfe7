"""PyTorch: torch's fused kernels, plus the least extra work that keeps the contract.

``torch.softmax`` and ``torch.log_softmax`` are one fused pass per row, but they
miss the contract (docs/contract.md) in four places: a row with ``+inf`` or
with nothing left comes out all NaN; they have no integer kernels and take one
``dim`` only; ``log_softmax`` computes ``log(S)`` where the contract needs
``log1p(s')``, so the largest log-probability of a peaked row loses its
relative precision; and on the CPU their row sum is a sequential accumulation
(per vector lane) whose error grows with the row, more so along a non-last
dim, where the cascade sum of ``torch.sum`` stays within a few ulp.
``torch.logsumexp`` is a composite of four full passes without the log1p form.

Three formulations:

- **Small calls** (at most :data:`_SMALL` elements, float32 / float64 CPU
  tensors, the last axis, no mask, temperature or weights, eagerly), where
  each tensor operation costs its ~2 us of dispatch rather than a pass: as
  few operations as the contract allows, one host read, and torch's own
  backward nodes under autograd. softmax: the fused kernel and its row sums,
  read into a list and checked in Python (NaN: a special row; a drifted sum
  divides the rows). log_softmax: the fused kernel and the maximum of its
  output over all rows, the largest ``-log(S)`` (NaN: a special row; above
  the threshold: a peaked row, and the log1p form runs in six operations,
  under autograd as a per-row correction of the fused output). logsumexp:
  the log1p form in six operations, differentiated by autograd. A special
  row hands the call to the eager formulation below.
- **CPU tensors, eagerly**, where reading a flag back costs nothing: run the
  fused kernel, then one read of its output says which rows need more.
  softmax: the row sums of the output (cascade-accurate); NaN marks a special
  row, a sum off 1 by more than ``eps`` a row that drifted, which is divided by
  its sum (half-precision outputs skip this: the float32 drift is far below
  their rounding, and a special row is found from one column, NaN in every
  entry). log_softmax: the row maxima of the output, ``-log(S)``; NaN marks a
  special row, a small ``log(S)`` a peaked row whose largest entries need the
  log1p form. Along a non-last dim the fused log_softmax drifts too far to be
  checked, and the exact composite runs instead; logsumexp is always the
  composite. The composites run slab by slab (:data:`_SLAB` elements at a
  time: max, shift, exp into a slab buffer, sum), never allocating a
  full-size temporary (page faults on a fresh one cost as much as a pass).
  Special rows (``+inf``, NaN, nothing left) and a few peaked rows are handed
  to the generic core, only those rows. Under autograd the same runs as the
  forward of an ``autograd.Function`` whose backward is torch's own softmax /
  log_softmax backward of the fixed output (0 for special rows, as in the
  generic core; differentiable again, so double backward works).
- **Everything else** (CUDA and other devices, ``torch.compile``, functorch
  transforms, tensor subclasses, and :func:`branch_free` blocks): no host
  synchronisation. softmax is the fused kernel for the rows whose maximum is
  finite, the contract's values selected for the others; log_softmax and
  logsumexp are left to the generic core.

**CUDA tensors with Triton** (it ships with torch's CUDA wheels) take the
kernels of ``torch_triton`` first: one launch per call, the whole contract in
the kernel, forward and backward, under ``torch.compile`` too; what they do
not cover (listed there) returns ``NotImplemented`` and comes back here.

Tuple axes are merged into one dimension (``flatten``, a view when the axes are
adjacent); non-adjacent axes (but for logsumexp), ``axis=()``, empty arrays and
the weighted, signed and complex logsumexp go to the generic core. A narrowing
``dtype=`` rounds ``x`` first (``softmax_xp._call.input_rounding``); half
precision then runs the fused kernels with ``dtype=torch.float32`` and is
rounded once at the end (torch's rounding turns values beyond the half range
into +-inf, as the generic core does). Masked outputs are constants under
autograd: their cotangents are dropped before the backward's row sums.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, cast

import torch

from .. import _generic
from .. import _kernels as kernels
from .._call import Call, input_rounding
from . import GPU_KERNELS

__all__ = ["branch_free", "run"]

_BRANCH_FREE: ContextVar[bool] = ContextVar("softmax_xp_branch_free", default=False)
_INF = math.inf
_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)

# elements per slab of the composites (4 MiB of float32): small enough to
# spare a full-size temporary, large enough that the intra-op thread pool
# meets for few operations (each is a synchronisation)
_SLAB = 1 << 20

# torch's own backward of softmax (False) and log_softmax (True) from the output
_BACKWARD = (torch._softmax_backward_data, torch._log_softmax_backward_data)

Slab = tuple[tuple[Any, ...], torch.Tensor, torch.Tensor]
Fixed = tuple[torch.Tensor, torch.Tensor | None]  # output, its special rows if any


def _no_triton_run(_kind: str, _call: Call, **_opts: Any) -> Any:
    return NotImplemented


# softmax_xp._fast.torch_triton.run once imported (_no_triton where Triton does
# not, or where SOFTMAX_XP_GPU_KERNELS=0 turned the GPU kernels off)
_TRITON: Callable[..., Any] | None = None if GPU_KERNELS else _no_triton_run
# set by torch_triton._on_cpu() (tests): CPU tensors take the Triton kernels too
_triton_on_cpu = False


def _triton_run(kind: str, call: Call, opts: dict[str, Any]) -> Any:
    """``torch_triton.run``, or ``NotImplemented`` where Triton does not import."""
    global _TRITON  # noqa: PLW0603 - imported on the first CUDA call
    if _TRITON is None:
        try:
            from . import torch_triton
        except ImportError:
            _TRITON = _no_triton_run
        else:
            _TRITON = torch_triton.run
    return _TRITON(kind, call, **opts)


@contextlib.contextmanager
def branch_free(enabled: bool = True) -> Iterator[None]:
    """Run the branch-free (device) formulation on CPU tensors too, in this block.

    For tests: it holds for the current thread (or asyncio task) only.
    """
    token = _BRANCH_FREE.set(enabled)
    try:
        yield
    finally:
        _BRANCH_FREE.reset(token)


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` on torch tensors, or ``NotImplemented``."""
    if call.x.is_cuda or _triton_on_cpu:
        out = _triton_run(kind, call, opts)
        if out is not NotImplemented:
            return out
    if _small_call(kind, call, opts):
        small = _SMALL_PATHS[kind](call.x, call.shape, opts)
        if small is not None:
            return small
    axes = call.axes
    if call.empty or not axes:
        return NotImplemented  # the generic fill ties autograd itself
    lse = kind == "logsumexp"
    if lse and (call.b is not None or opts["return_sign"] or call.x.is_complex()):
        return NotImplemented
    if axes[-1] - axes[0] != len(axes) - 1:  # non-adjacent axes: no view merges them
        return NotImplemented
    if kind != "softmax" and not _eager(call.x):
        return NotImplemented  # branch-free log_softmax, logsumexp: the generic core
    x = _inputs(call, negate=bool(opts.get("negate", False)))
    dim, where = axes[0], call.where
    if len(axes) > 1:
        x = x.flatten(axes[0], axes[-1])
        if where is not None:
            where = torch.broadcast_to(where, call.shape).flatten(axes[0], axes[-1])
    if not _eager(x):
        out = _softmax_branch_free(call, x, dim, where)
    elif _grad(x):
        out = _FromOutput.apply(x, call, kind, dim, where)  # type: ignore[no-untyped-call]
    else:
        out = _EAGER[kind](call, x, dim, where)[0]
    shape = (
        kernels.reduced_shape(call.shape, axes, opts["keepdims"]) if lse else call.shape
    )
    if out.shape != shape:
        out = out.reshape(shape)  # splits the merged dim again: a view
    return out if out.dtype == call.out_dtype else out.to(call.out_dtype)


# ---------------------------------------------------------------------------
# small calls


# tensors up to this many elements take the small-call path (float32 / float64
# CPU tensors, last axis, no mask, temperature or weights, eagerly): few
# enough that each tensor operation costs its dispatch more than its pass. At
# 2**16 elements (64 x 1024 ... 4096 x 16) it took 0.5-0.86x the eager path's
# time (1 thread); at 2**20 softmax took 1.36x, and many short rows with one
# peaked row (the log1p form then runs on every row) 3-8x
_SMALL = 1 << 16
_EPS = {dtype: torch.finfo(dtype).eps for dtype in (torch.float32, torch.float64)}
# softmax's row sums are checked in Python up to this many rows
_LIST_ROWS = 128


def _small_call(kind: str, call: Call, opts: dict[str, Any]) -> bool:
    """Whether ``call`` takes the small-call path.

    Ordered so that a plain call answers from the :class:`Call`'s fields (and
    the Python shape) first; each tensor attribute costs ~0.1-0.3 us.
    """
    shape, dtype, x = call.shape, call.out_dtype, call.x
    return (
        (dtype is torch.float32 or dtype is torch.float64)
        and call.where is None
        and call.temperature is None
        and (not opts or (kind == "logsumexp" and not opts["return_sign"]))
        and call.b is None
        and call.axes == (len(shape) - 1,)
        and 0 < math.prod(shape) <= _SMALL
        and type(x) is torch.Tensor
        and x.dtype is dtype  # no dtype= cast
        and x.is_cpu
        and not torch.compiler.is_compiling()
        and not (_is_wrapped is not None and _is_wrapped(x))
        and not _BRANCH_FREE.get()
    )


def _small_softmax(
    x: torch.Tensor, shape: tuple[int, ...], _opts: dict[str, Any]
) -> torch.Tensor | None:
    """The fused softmax, divided by its row sums where they drifted; ``None`` when a row is special.

    The row sums of a softmax are finite or NaN, and NaN marks a special row.
    With few rows they are read into a list (one read, no further tensor
    operation) and checked in Python: NaN, or a sum off 1 by more than ``eps``
    (3-30% of 8-row calls, the fused kernel erring up to 4.1 ulp in float32
    and 6.5 in float64 on rows of 15-512), which divides every row (within
    ~3.5 ulp; a row whose sum is within ``eps`` of 1 is within ~3.2).
    With many rows, one read of the sums' maximum says whether a row is
    special, and every row is divided. Under autograd the division is by the
    detached sums, and torch's own backward nodes run.
    """
    y = torch.softmax(x, -1)
    grad = y.requires_grad
    s = (y.detach() if grad else y).sum(-1)
    if len(shape) == 2 and shape[0] <= _LIST_ROWS:
        eps = _EPS[y.dtype]
        drifted = False
        for v in s.tolist():
            if not -eps <= v - 1.0 <= eps:  # also NaN
                if math.isnan(v):
                    return None
                drifted = True
        if not drifted:
            return y
    elif math.isnan(s.max()):
        return None
    s = s.unsqueeze(-1)
    return y / s if grad else y.div_(s)


def _small_log_softmax(
    x: torch.Tensor, shape: tuple[int, ...], _opts: dict[str, Any]
) -> torch.Tensor | None:
    """The fused log_softmax, or the log1p form when a row is peaked; ``None`` when one is special.

    The largest entry of a row of the fused output is ``-log(S)``: one read of
    the maximum over all rows says whether a row is special (NaN) or peaked
    (``log(S)`` small, where the log1p form must run). Then the log1p form
    runs on every row. Under autograd it is a correction of the fused output
    by a constant per row, ``log1p(s') - log(S)``, so that torch's own
    backward of the fused kernel runs (one node; differentiating the log1p
    form itself made the 2-layer MLP step 1.43x the native one, against 1.26x).
    """
    y = torch.log_softmax(x, -1)
    grad = y.requires_grad
    fused = y.detach() if grad else y
    top = float(fused.max())  # NaN when a row is special
    if math.isnan(top):
        return None
    if top <= -_log1p_threshold(shape[-1], half_out=False):
        return y
    if not grad:
        _, z, tail = _small_log1p_parts(x, grad=False)
        return z.sub_(tail)
    _, _, tail = _small_log1p_parts(x.detach(), grad=False)
    return y - tail.add_(fused.amax(-1, keepdim=True))  # fused: x - m - log(S)


def _small_logsumexp(
    x: torch.Tensor, _shape: tuple[int, ...], opts: dict[str, Any]
) -> torch.Tensor | None:
    """``m + log1p(s')`` in six tensor operations; ``None`` when a slice is special.

    Under autograd these are differentiable operations whose gradient is the
    exact one: ``m``'s gradient goes to the entry that ``torch.max`` points at
    and cancels its share of ``s'``'s, so that every entry gets ``p_i``; double
    backward works.
    """
    grad = x.requires_grad and torch.is_grad_enabled()
    m, _, tail = _small_log1p_parts(x, grad=grad)
    lse = m + tail
    # a maximum that is not finite (``log1p(s')`` is not always NaN then: in
    # [inf, 1] the NaN is the entry set to 0)
    if not math.isfinite(lse.detach().sum()):
        return None
    return lse if opts["keepdims"] else lse.squeeze(-1)


def _small_log1p_parts(
    x: torch.Tensor, *, grad: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(m, x - m, log1p(s'))`` over the last axis of a small ``x`` (keepdims).

    ``s'`` is the row sum of ``exp(x - m)`` with the one entry that
    ``torch.max`` points at set to 0 (ties keep their 1s: ``s'`` counts them):
    six operations, against the slab composite's dozen. Without ``grad`` the
    steps run in place. A row whose maximum is not finite gets NaN in ``z``,
    and NaN or 0 in ``log1p(s')``.
    """
    m, idx = torch.max(x, -1, keepdim=True)
    z = x - m
    e = torch.exp(z)
    e = e.scatter(-1, idx, 0.0) if grad else e.scatter_(-1, idx, 0.0)
    tail = e.sum(-1, keepdim=True)
    return m, z, torch.log1p(tail) if grad else tail.log1p_()


SmallPath = Callable[
    [torch.Tensor, tuple[int, ...], dict[str, Any]], torch.Tensor | None
]
_SMALL_PATHS: dict[str, SmallPath] = {
    "softmax": _small_softmax,
    "log_softmax": _small_log_softmax,
    "logsumexp": _small_logsumexp,
}


# ---------------------------------------------------------------------------
# inputs and helpers


def _eager(x: torch.Tensor) -> bool:
    """Whether a data-dependent branch (a host read of a flag) is allowed and cheap."""
    return (
        type(x) is torch.Tensor
        and x.device.type == "cpu"
        and not torch.compiler.is_compiling()  # before ContextVar.get: a graph break
        and not (_is_wrapped is not None and _is_wrapped(x))
        and not _BRANCH_FREE.get()
    )


def _grad(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad


def _inputs(call: Call, *, negate: bool) -> torch.Tensor:
    """``kernels.inputs(call, negate=negate)``, with two passes fewer where nothing needs them.

    Half precision with nothing to compute is left for the fused kernel to
    widen (``dtype=float32``, no extra pass); a temperature without autograd
    is one division (torch's gives IEEE's +-inf on overflow, which
    ``kernels.divide`` spells out in 15 operations for NumPy's sake), restored
    where ``x`` is not finite. Under autograd a temperature takes the kernels'
    route, whose overflowed quotients are constants.
    """
    x: torch.Tensor = call.x
    t = call.temperature
    if t is not None and (_grad(x) or _grad(t)):
        return cast("torch.Tensor", kernels.inputs(call, negate=negate))
    if not x.is_floating_point():  # ints and bools hold no NaN: cast, then mask
        x = x.to(call.compute_dtype)
    target = input_rounding(call, x.dtype)
    if target is not None:
        x = kernels.round_to(call.xp, x, target)
    if call.where is not None:
        x = torch.where(call.where, x, _INF if negate else -_INF)
    if t is None and not negate:
        return x
    x = x.to(call.compute_dtype)
    if isinstance(t, float):  # -(x / t) == x / (-t) exactly: one pass for both
        return x / (-t if negate else t)
    if negate:
        x = -x
    return x if t is None else torch.where(torch.isfinite(x), x / t.to(x.dtype), x)


def _call_on(call: Call, x: torch.Tensor, dim: int, where: Any) -> Call:
    """A call of the generic core on the prepared inputs ``x`` (or some of their rows)."""
    rest = (where, None, None, call.compute_dtype, call.compute_dtype, x.device)
    return Call(call.func, x, call.xp, tuple(x.shape), (dim,), *rest)


def _fused_dtype(x: torch.Tensor, dtype: Any) -> Any:
    return dtype if x.dtype != dtype else None


def _as_rows(t: torch.Tensor, dim: int) -> torch.Tensor | None:
    """``t`` as a ``(rows, n)`` view when ``dim`` is its last, contiguous axis."""
    if dim != t.ndim - 1 or not t.is_contiguous():
        return None
    return t.view(-1, t.shape[-1])


def _row_select(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` of ``t`` (reduced over its last axis) as a ``(k, n)`` tensor."""
    t2 = _as_rows(t, dim)
    if t2 is None:  # a strided view: the row layout needs one copy
        t2 = t.reshape(-1, t.shape[dim])
    return t2.index_select(0, idx)


def _redo_rows(
    call: Call,
    y: torch.Tensor,
    x: torch.Tensor,
    dim: int,
    where: Any,
    marked: torch.Tensor,
    generic: Callable[[Call], torch.Tensor],
    finite_rows: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``y`` with its ``marked`` rows replaced by ``generic`` (a ``_generic`` function) of them.

    In place where ``y`` has a plain row layout: integer-indexed row copies
    (``index_select``/``index_copy_``) cost a few percent of a boolean-mask
    ``y[marked] = ...``. Otherwise ``generic`` of all of ``x``. Rows known to
    have a finite maximum may take ``finite_rows`` (a ``(k, n)`` tensor of
    masked inputs to its result) instead of the generic core.
    """
    y_rows = _as_rows(y, dim)
    if y_rows is None:
        return generic(_call_on(call, x, dim, where))
    idx = torch.nonzero(marked.reshape(-1)).squeeze(1)
    if where is not None:
        where = _row_select(torch.broadcast_to(where, x.shape), dim, idx)
    x_rows = _row_select(x, dim, idx)
    if finite_rows is not None:
        rows = finite_rows(x_rows)
    else:
        rows = generic(_call_on(call, x_rows, 1, where))
    y_rows.index_copy_(0, idx, rows.to(y.dtype))
    return y


# ---------------------------------------------------------------------------
# softmax


def _softmax_eager(call: Call, x: torch.Tensor, dim: int, where: Any) -> Fixed:
    """The fused softmax and its fix-ups, in place; also the special rows, if any."""
    dtype = call.compute_dtype
    y = torch.softmax(x, dim, dtype=_fused_dtype(x, dtype))
    if call.out_dtype != dtype:  # half output: no drift check, one column
        special = torch.isnan(y.narrow(dim, 0, 1))
    else:
        sums = y.sum(dim, keepdim=True)
        special = torch.isnan(sums)
        _divide_drifted_rows(y, dim, sums, torch.finfo(dtype).eps)
    if not bool(special.any()):
        return y, None
    return _redo_rows(call, y, x, dim, where, special, _generic.softmax), special


def _divide_drifted_rows(
    y: torch.Tensor, dim: int, sums: torch.Tensor, eps: float
) -> None:
    """Divide the rows of ``y`` whose sum is off 1 by more than ``eps`` by it, in place."""
    drifted = torch.abs(sums - 1) > eps  # False where NaN
    n_drifted = int(drifted.sum())
    if not n_drifted:
        return
    y_rows = _as_rows(y, dim)
    if y_rows is None or 4 * n_drifted > drifted.numel():  # most rows: one pass
        y.div_(torch.where(drifted, sums, 1.0))
        return
    idx = torch.nonzero(drifted.reshape(-1)).squeeze(1)  # a few rows: only those
    rows = y_rows.index_select(0, idx).div_(sums.reshape(-1, 1)[idx])
    y_rows.index_copy_(0, idx, rows)


def _softmax_branch_free(
    call: Call, x: torch.Tensor, dim: int, where: Any
) -> torch.Tensor:
    """The fused softmax of the rows whose maximum is finite, the contract's values selected elsewhere.

    Kept torch-specific: the generic core's softmax costs 2.0x this on 4096 x
    4096 float32 rows, 2.2x with its backward (docs/performance.md, torch).
    Special rows: ``1/k`` on the ``k`` ``+inf`` entries of a ``+inf`` row, 0
    where nothing is left, NaN (unmasked entries) in a NaN row.
    """
    dtype = call.compute_dtype
    m = torch.amax(x, dim, keepdim=True)
    finite = torch.isfinite(m)
    # rows whose max is not finite would send NaN through the fused kernel's
    # backward even when discarded: feed it zeros there
    src = torch.where(finite, x, 0.0) if _grad(x) else x
    y = torch.softmax(src, dim, dtype=_fused_dtype(x, dtype))
    if x.device.type == "cpu" and call.out_dtype == dtype:
        # the CPU kernel's row sums drift (module docstring); on a device the
        # kernel's own (tree) reduction is trusted
        y = y / y.sum(dim, keepdim=True).detach()
    hit = x == torch.where(m == _INF, m, math.nan)  # the +inf entries of +inf rows
    special = hit / hit.sum(dim, keepdim=True, dtype=dtype).clamp(min=1)
    return torch.where(finite, y, kernels.poison(call.xp, m, special, where))


# ---------------------------------------------------------------------------
# log_softmax


def _log1p_threshold(n: int, half_out: bool) -> float:
    """Rows whose ``log(S)`` is below this are recomputed exactly.

    The fused kernel's ``-log(S)`` is off by the sum's drift ``d`` (relative)
    plus ``eps`` from rounding ``S = 1 + s'``, and every entry's magnitude is at
    least ``log(S)``: ``log(S) >= 2`` keeps that within ~2 ulp on rows up to
    4096 (measured), and the drift grows like ``sqrt(n)`` beyond. Rows of up
    to 256 entries drift less: ``log(S) >= 1`` keeps them within 2.6 ulp
    (measured on 3e6 entries per length, float32 and float64), which spares
    the exact composite for rows whose largest probability is below 0.37. A
    float32 result rounded to half precision has 2**13 float32 ulp of room.
    """
    if half_out:
        return 2.0**-5
    if n <= 256:
        return 1.0
    return 2.0 * max(1.0, math.sqrt(n / 4096.0))


def _log_softmax_eager(call: Call, x: torch.Tensor, dim: int, where: Any) -> Fixed:
    """The fused log_softmax and its fix-ups, in place; also the special rows, if any."""
    dtype, half_out = call.compute_dtype, call.out_dtype != call.compute_dtype
    if dim != x.ndim - 1 and not half_out:
        # the fused kernel accumulates sequentially along a non-last dim
        y = torch.empty(x.shape, dtype=dtype, device=x.device)
        if _exact_log_softmax_into(x, (dim,), y):
            return y, None
        special = ~torch.isfinite(torch.amax(x, dim, keepdim=True))
        return _generic.log_softmax(_call_on(call, x, dim, where)), special
    y = torch.log_softmax(x, dim, dtype=_fused_dtype(x, dtype))
    top = torch.amax(y, dim, keepdim=True)  # -log(S) per row; NaN: special row
    special = torch.isnan(top)
    peaked = top > -_log1p_threshold(x.shape[dim], half_out)  # False where NaN
    n_peaked = int(peaked.sum())
    if n_peaked:
        if 4 * n_peaked <= peaked.numel() and _as_rows(y, dim) is not None:
            y = _redo_rows(
                call, y, x, dim, where, peaked, _generic.log_softmax, _exact_rows
            )
        else:
            _exact_log_softmax_into(x, (dim,), y)  # special rows: redone below
    if not bool(special.any()):
        return y, None
    return _redo_rows(call, y, x, dim, where, special, _generic.log_softmax), special


class _FromOutput(torch.autograd.Function):
    """The eager fast path under autograd: its output, and the gradient from it.

    The forward runs with the fix-ups in place (no full-size copies); the
    backward is torch's own softmax / log_softmax backward of that output, for
    logsumexp the fused softmax of ``x`` (double backward works through both),
    with 0 for special rows as in the generic core, where their values are
    constants. Kept torch-specific for logsumexp: the generic core under
    autograd costs 5-6x this on 4096 x 4096 float32 (docs/performance.md).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, call: Call, kind: str, dim: int, where: Any
    ) -> torch.Tensor:
        y, special = _EAGER[kind](call, x, dim, where)
        ctx.kind, ctx.dim, ctx.x_dtype = kind, dim, x.dtype
        ctx.save_for_backward(x if kind == "logsumexp" else y, special, where)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        saved, special, where = ctx.saved_tensors
        if ctx.kind == "logsumexp":  # softmax of x (differentiable again)
            x_safe = torch.where(special, 0.0, saved)
            gx = g * torch.softmax(x_safe, ctx.dim, dtype=g.dtype)
        else:
            if where is not None:
                # masked outputs are constants: their cotangents must not reach
                # the row sum of the backward (log_softmax's g - exp(y) * sum(g))
                g = torch.where(where, g, 0.0)
            backward = _BACKWARD[ctx.kind == "log_softmax"]
            gx = backward(g, saved, ctx.dim, saved.dtype)
        if special is not None:
            gx = torch.where(special, 0.0, gx)
        return gx.to(ctx.x_dtype), None, None, None, None


# ---------------------------------------------------------------------------
# the exact composites, slab by slab (no autograd)


def _slabs(x: torch.Tensor, dims: tuple[int, ...], dtype: Any) -> Iterator[Slab]:
    """``(index, x[index], buffer)`` for slabs of ``x`` cut along its longest unreduced axis.

    ``buffer`` has the slab's shape and ``dtype``, and is reused from slab to slab.
    """
    others = [a for a in range(x.ndim) if a not in dims]
    pieces: list[tuple[Any, ...]] = [(Ellipsis,)]
    if others:
        ax = max(others, key=lambda a: x.shape[a])
        per = max(1, _SLAB * x.shape[ax] // max(1, x.numel()))
        pieces = [
            (*(slice(None),) * ax, slice(start, start + per))
            for start in range(0, x.shape[ax], per)
        ]
    buf: torch.Tensor | None = None
    for piece in pieces:
        xs = x[piece]
        if buf is None or buf.shape != xs.shape:
            buf = torch.empty(xs.shape, dtype=dtype, device=x.device)
        yield piece, xs, buf


def _shifted_slab(
    xs: torch.Tensor, dims: tuple[int, ...], shifted: torch.Tensor, e: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, s')`` of one slab; slices whose maximum is not finite get meaningless ``s'``.

    Writes ``shifted = x - m`` (``x`` where ``m`` is not finite), formed in the
    dtype of ``shifted`` (half input: float32, as the generic core), and
    ``e = exp(shifted)``, which ``s'`` then overwrites; ``e`` may be
    ``shifted`` itself.
    """
    m = torch.amax(xs, dims, keepdim=True)
    m_safe = torch.where(torch.isfinite(m), m, 0.0).to(shifted.dtype)
    torch.sub(xs, m_safe, out=shifted)  # half input: computed in float32
    torch.exp(shifted, out=e)
    return m, _log1p_arg(e, dims)


def _log1p_arg(e: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``s'`` from ``e = exp(x - m)`` over ``dims``, in place: ``kernels.log1p_tail``'s value.

    Kept torch-specific: the kernel's count and masked pairwise sum cost 8-10x
    this per slab, and make logsumexp of 4096 x 4096 float32 6x slower
    (docs/performance.md, torch). ``S - 1`` is exact enough once ``S >= 2``.
    A slice with ``S < 2`` has one maximum, its ``exp`` the only 1 of the slice (a
    second 1 would make ``S >= 2``), so ``frac`` (which maps 1 to 0 and keeps
    the rest) takes it out of the sum; the count of ones is the rounded
    difference of the sums.
    """
    total = e.sum(dims, keepdim=True)
    if not bool((total < 2).any()):
        return total - 1
    rest = e.frac_().sum(dims, keepdim=True)
    return rest + (torch.round(total - rest) - 1)


def _exact_rows(rows: torch.Tensor) -> torch.Tensor:
    """log_softmax of peaked rows (finite maxima), exactly, in the compute dtype.

    Kept torch-specific: handing them to ``_generic.log_softmax`` made
    log_softmax of 1,000,000 x 64 float32 2.5x slower (a quarter of such rows
    are peaked); see docs/performance.md.
    """
    out = torch.empty(rows.shape, dtype=torch.promote_types(rows.dtype, torch.float32))
    _exact_log_softmax_into(rows, (1,), out)
    return out


def _exact_log_softmax_into(
    x: torch.Tensor, dims: tuple[int, ...], out: torch.Tensor
) -> bool:
    """``out = x - m - log1p(s')``; whether every slice's maximum was finite.

    Slices whose maximum is not finite get meaningless values.
    """
    finite = True
    for piece, xs, buf in _slabs(x, dims, out.dtype):
        shifted = out[piece]
        m, s = _shifted_slab(xs, dims, shifted, buf)
        finite = finite and bool(torch.isfinite(m).all())
        shifted.sub_(torch.log1p(s))
    return finite


# ---------------------------------------------------------------------------
# logsumexp


def _lse_eager(call: Call, x: torch.Tensor, dim: int, _where: Any) -> Fixed:
    """logsumexp along ``dim`` (keepdims), ``m + log1p(s')`` slab by slab; its special slices.

    Slices whose maximum is not finite give their maximum.
    """
    dtype, dims = call.compute_dtype, (dim,)
    shape = kernels.reduced_shape(tuple(x.shape), dims, keepdims=True)
    m, s = torch.empty(shape, dtype=dtype), torch.empty(shape, dtype=dtype)
    for piece, xs, buf in _slabs(x, dims, dtype):
        m[piece], s[piece] = _shifted_slab(xs, dims, buf, buf)
    lse: torch.Tensor = kernels.lse_from_state(call.xp, m, s)
    return lse, ~torch.isfinite(lse)


_EAGER: dict[str, Callable[[Call, torch.Tensor, int, Any], Fixed]] = {
    "softmax": _softmax_eager,
    "log_softmax": _log_softmax_eager,
    "logsumexp": _lse_eager,
}
