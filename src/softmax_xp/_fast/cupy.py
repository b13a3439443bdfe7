"""CuPy: one fused CUDA kernel per call, one block per row, the contract inside.

The kernels are CUDA C (``cupy_kernels.cu``, shipped with the package),
compiled by CuPy's ``RawModule`` (NVRTC) at the first call of each
configuration and device; CuPy users install nothing more. They run on CuPy's
current stream and never synchronise with the host.

The algorithm (the kernels, their CPU twin ``tests/_cuda_twin.py`` and the
Triton and Pallas kernels share it):

- A *row* is one slice along the reduced axes. The call is viewed, without a
  copy, as ``(outer, n, inner)``: the axes before the reduced ones merged into
  ``outer``, the reduced ones into ``n``, the ones after into ``inner``, each
  with one stride (:func:`plan`); a mask or an array temperature is a
  broadcast view of ``x``'s shape, strides 0 along its broadcast axes.
- The compute dtype is float32 for float16, bfloat16 and float32 outputs,
  float64 for float64. Each entry is loaded, rounded first to what a
  narrowing ``dtype=`` asks (:func:`softmax_xp._call.input_rounding`; integer
  and bool inputs are converted to the compute dtype, then rounded), negated
  for softmin, divided by the temperature where finite; masked entries become
  ``-inf`` and take no part (a NaN there is never looked at).
- Per row, the online pair ``(m, r)``: ``m`` the running maximum of the finite
  and ``-inf`` entries, ``r`` the sum of ``exp(z - m)`` over all of them but
  one occurrence of ``m`` (ties count 1 each, exactly). Two pairs merge, the
  larger ``m1`` first, as ``(m1, r1 + (1 + r2) * exp(m2 - m1))``; a side with
  ``m = -inf`` adds nothing (no ``exp(-inf - -inf)``). Beside it, whether an
  unmasked entry is NaN and the count ``k`` of ``+inf`` entries.
- Results: a NaN row is NaN; ``k >= 1`` gives softmax ``1/k`` on the ``+inf``
  entries (log_softmax ``-log k``) and 0 (``-inf``) elsewhere, logsumexp
  ``+inf``; nothing left gives 0, ``-inf``, ``-inf``; otherwise softmax
  ``exp(z - m) * (1 / (1 + r))`` (the reciprocal once per row: an IEEE
  division per entry calls a slow-path subroutine whose register saves
  spilled; one more rounding, within the tested ulps), log_softmax
  ``(z - m) - log1p(r)``, logsumexp ``m + log1p(r)``. Masked entries are 0 / ``-inf``. Each result is rounded
  once to the output dtype.
- A block of :data:`BLOCK` threads takes a row in tiles of :data:`TILE`
  entries, thread ``t`` holding entries ``t + q * BLOCK`` of each tile
  (:data:`ITEMS` of them, in registers); each thread's chunk gives a pair,
  merged into the thread's running pair, then across the block: a
  shuffle-down tree in each warp, the warps' pairs through shared memory, the
  same tree over them. A row of at most one tile is read once and written
  from the registers; a longer row is read twice (the pair, then the output).

:data:`ITEMS` = 16 values per thread (16 registers in float32, 32 in
float64) and :data:`BLOCK` = 256 threads keep every instantiation within
the registers without spills (the compile check of ``tests/test_gpu_cupy.py``
asserts 0 spill bytes for sm_80 and sm_90); rows of up to 4096 entries are
read once.

What falls back to the generic core (``NotImplemented``): empty calls and
``axis=()``; reduced axes that are not adjacent; an ``x``, mask or
temperature whose axes do not merge into ``(outer, n, inner)`` with one stride
each (a transposed or oddly strided input, a mask broadcast along some but not
all of a merged group of axes); logsumexp with weights ``b``,
``return_sign`` or complex input; float64 input with a bfloat16 output (the
one rounding PTX lacks before sm_90); an array temperature of another dtype
than the compute dtype whose cast would exceed 1% of ``x``'s bytes; and a
few very long rows (fewer than :data:`_FEW_ROWS` rows of more than
:data:`_LONG_ROW` entries), where one block per row would leave the GPU idle
and CuPy's own multi-block reductions win.
"""

from __future__ import annotations

import importlib.resources
import math
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._call import Call
from .._compat import dtype_kind
from . import GPU_KERNELS

__all__ = [
    "BLOCK",
    "ITEMS",
    "TILE",
    "Plan",
    "instantiations",
    "name_expression",
    "plan",
    "rounding",
    "run",
    "source",
]

# the kernels' shape: keep equal to SXP_BLOCK / SXP_ITEMS of cupy_kernels.cu
BLOCK = 256
ITEMS = 16
TILE = BLOCK * ITEMS

KINDS = {"softmax": 0, "log_softmax": 1, "logsumexp": 2}

# dtype name -> the kernels' storage type
C_TYPES = {
    "float16": "half_s",
    "bfloat16": "bf16_s",
    "float32": "float",
    "float64": "double",
    # integer inputs: the common ones, to float32 / float64 outputs (the rest
    # fall back: each instantiation costs compile time, here and in the check)
    "bool": "bool",
    "int32": "int",
    "int64": "long long",
}
FLOATS = ("float16", "bfloat16", "float32", "float64")

# (source, target) floating dtypes where a cast can change a value (the
# ``rounds`` rule of softmax_xp._call, by name; a test checks them against it)
_ROUNDS = {
    ("float64", "float32"),
    ("float64", "float16"),
    ("float64", "bfloat16"),
    ("float32", "float16"),
    ("float32", "bfloat16"),
    ("float16", "bfloat16"),
    ("bfloat16", "float16"),
}
_UNSUPPORTED_ROUNDING = {("float64", "bfloat16")}  # PTX: cvt.rn.bf16.f64 needs sm_90

# fewer rows than this, each longer than _LONG_ROW: CuPy's reductions instead
_FEW_ROWS = 16
_LONG_ROW = 1 << 20
# row lengths and row counts the kernels' 32-bit indices hold (a tile of headroom)
_INT_MAX = 2**31 - 1 - TILE


def compute_name(out: str) -> str:
    """The compute dtype of an output dtype, by name."""
    return "float64" if out == "float64" else "float32"


def rounding(kind: str, src: str, out: str) -> str | None:
    """What the kernel rounds an input of dtype ``src`` to first, or ``None``.

    :func:`softmax_xp._call.input_rounding` by dtype name: a narrowing
    ``dtype=`` rounds to the output dtype (logsumexp: to its compute dtype);
    integer and bool inputs are converted to the compute dtype first, so they
    round from there.
    """
    target = compute_name(out) if kind == "logsumexp" else out
    if src not in FLOATS:
        src = compute_name(out)
    return target if (src, target) in _ROUNDS else None


def name_expression(kind: str, src: str, out: str) -> str:
    """The kernel instantiation for ``kind`` on ``src`` input and ``out`` output."""
    r = rounding(kind, src, out)
    cr = "none_t" if r is None else C_TYPES[r]
    return f"sxp_rows<{C_TYPES[src]}, {C_TYPES[out]}, {cr}, {KINDS[kind]}>"


def supported(kind: str, src: str, out: str) -> bool:
    """Whether a kernel exists for this input and output dtype."""
    if src not in C_TYPES or out not in FLOATS:
        return False
    if src not in FLOATS and out not in ("float32", "float64"):
        return False
    r = rounding(kind, src, out)
    return (src, r) not in _UNSUPPORTED_ROUNDING


def instantiations() -> list[str]:
    """Every kernel instantiation this module can launch (the compile check's list)."""
    return [
        name_expression(kind, src, out)
        for kind in KINDS
        for src in C_TYPES
        for out in FLOATS
        if supported(kind, src, out)
    ]


def source() -> str:
    """The CUDA C source of the kernels."""
    ref = importlib.resources.files(__package__ or "softmax_xp._fast")
    return ref.joinpath("cupy_kernels.cu").read_text(encoding="utf-8")


# NVRTC options: no fused multiply-add contraction, so that the kernels'
# arithmetic is what the source (and the CPU twin) says; IEEE division, no
# flush to zero (NVRTC's defaults)
OPTIONS = ("--std=c++11", "--fmad=false")


# ---------------------------------------------------------------------------
# the plan: the (outer, n, inner) view of a call, for the kernel and its twin


@dataclass(frozen=True)
class Plan:
    """How one call runs as a kernel launch (also what the CPU twin executes)."""

    kind: str
    src: str  # x's dtype name
    out: str  # the output dtype name
    outer: int
    n: int
    inner: int
    x_strides: tuple[int, int, int]  # in elements, along (outer, n, inner)
    where: Any  # the mask as given (broadcastable), or None
    w_strides: tuple[int, int, int]
    temperature: Any  # an array of the compute dtype, or None
    t_strides: tuple[int, int, int]
    t_scalar: float
    t_mode: int  # 0: none, 1: t_scalar, 2: the array
    negate: bool
    out_shape: tuple[int, ...]

    @property
    def rows(self) -> int:
        return self.outer * self.inner


def _name(dtype: Any) -> str:
    return str(np.dtype(dtype).name)


def _merge(
    shape: tuple[int, ...], strides: tuple[int, ...], dims: range
) -> tuple[int, int] | None:
    """``dims`` of a strided view as one ``(size, stride)``, or ``None``."""
    size, stride = 1, 0
    for d in dims:
        if shape[d] == 1:
            continue
        if size == 1:
            size, stride = shape[d], strides[d]
        elif stride == strides[d] * shape[d]:
            size, stride = size * shape[d], strides[d]
        else:
            return None
    return size, stride


def _view(
    a: Any, shape: tuple[int, ...], axes: tuple[int, ...]
) -> tuple[int, int, int] | None:
    """The element strides of ``a`` (of ``shape``) along (outer, n, inner), or ``None``."""
    itemsize = a.dtype.itemsize
    if any(s % itemsize for s in a.strides):
        return None
    strides = tuple(s // itemsize for s in a.strides)
    lo, hi = axes[0], axes[-1] + 1
    parts = [_merge(shape, strides, r) for r in (range(lo), range(lo, hi))]
    parts.append(_merge(shape, strides, range(hi, len(shape))))
    if any(p is None for p in parts):
        return None
    so, sn, si = (p[1] for p in parts if p is not None)
    return so, sn, si


def plan(kind: str, call: Call, **opts: Any) -> Plan | None:
    """The launch that computes ``_generic.<kind>(call, **opts)``, or ``None``.

    Works on the arrays of any library with NumPy-style ``strides`` in bytes
    (CuPy on the GPU, NumPy for the CPU twin); reads no array value.
    """
    xp, x, axes, shape = call.xp, call.x, call.axes, call.shape
    if call.empty or not axes or tuple(x.shape) != shape:
        return None
    if axes[-1] - axes[0] != len(axes) - 1:
        return None
    if kind == "logsumexp" and (call.b is not None or opts.get("return_sign")):
        return None
    if dtype_kind(xp, x.dtype) == "complex floating":
        return None
    src, out = _name(x.dtype), _name(call.out_dtype)
    if not supported(kind, src, out) or _name(call.compute_dtype) != compute_name(out):
        return None
    lo, hi = axes[0], axes[-1] + 1
    outer = math.prod(shape[:lo])
    n = math.prod(shape[lo:hi])
    inner = math.prod(shape[hi:])
    rows = outer * inner
    if n > _INT_MAX or rows > _INT_MAX or (rows < _FEW_ROWS and n > _LONG_ROW):
        return None
    x_strides = _view(x, shape, axes)
    if x_strides is None:
        return None
    where, w_strides = call.where, (0, 0, 0)
    if where is not None:
        where = xp.broadcast_to(where, shape)
        found = _view(where, shape, axes)
        if found is None:
            return None
        w_strides = found
    t: Any = call.temperature
    t_strides, t_scalar, t_mode = (0, 0, 0), 1.0, 0
    if isinstance(t, float):
        t, t_scalar, t_mode = None, t, 1
    elif t is not None:
        if t.dtype != call.compute_dtype:
            if (
                math.prod(t.shape) * np.dtype(call.compute_dtype).itemsize
                > x.nbytes // 100
            ):
                return None  # a cast beyond 1% of the input's memory
            t = xp.astype(t, call.compute_dtype)
        t = xp.broadcast_to(t, shape)
        found = _view(t, shape, axes)
        if found is None:
            return None
        t_strides, t_mode = found, 2
    out_shape: tuple[int, ...] = shape
    if kind == "logsumexp":
        keep = bool(opts.get("keepdims"))
        out_shape = tuple(
            1 if d in axes else s for d, s in enumerate(shape) if keep or d not in axes
        )
    return Plan(
        kind, src, out, outer, n, inner, x_strides, where, w_strides,
        t, t_strides, t_scalar, t_mode, bool(opts.get("negate")), out_shape,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# the launch

_MODULES: dict[tuple[int, str], Any] = {}
_LOCK = threading.Lock()


def _kernel(cp: Any, device: int, expr: str) -> Any:
    """The compiled kernel ``expr`` for ``device`` (compiled once, then cached)."""
    key = (device, expr)
    fn = _MODULES.get(key)
    if fn is None:
        with _LOCK:
            fn = _MODULES.get(key)
            if fn is None:
                module = cp.RawModule(
                    code=source(), options=OPTIONS, name_expressions=(expr,)
                )
                fn = _MODULES[key] = module.get_function(expr)
    return fn


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` on CuPy arrays, or ``NotImplemented``."""
    if not GPU_KERNELS:  # SOFTMAX_XP_GPU_KERNELS=0
        return NotImplemented
    p = plan(kind, call, **opts)
    if p is None:
        return NotImplemented
    cp = sys.modules["cupy"]  # imported: a CuPy array brought us here
    x = call.x
    with x.device:
        fn = _kernel(cp, x.device.id, name_expression(kind, p.src, p.out))
        y = cp.empty(p.out_shape, dtype=call.out_dtype)
        acc = np.float64 if p.out == "float64" else np.float32
        null = np.uint64(0)
        i64 = np.int64
        args = (
            x, y, np.int32(p.n), i64(p.inner), *map(i64, p.x_strides),
            null if p.where is None else p.where, *map(i64, p.w_strides),
            null if p.temperature is None else p.temperature, *map(i64, p.t_strides),
            acc(p.t_scalar), np.int32(p.t_mode), np.int32(p.negate),
        )  # fmt: skip
        fn((p.rows,), (BLOCK,), args)
    return y
