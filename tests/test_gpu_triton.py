"""The Triton kernels of torch on CUDA (``softmax_xp._fast.torch_triton``), proven on the CPU.

Without a GPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``)
on CPU tensors, routed there by ``torch_triton._on_cpu()``, through the public
functions end to end. The variable is read when ``@triton.jit`` runs, so it is
set here before the kernel module is imported; if that module was already
imported compiled in this process, the CPU-mode tests skip (tests-gpu-logic
sets the variable for the whole session). On a machine with a CUDA device and
without the variable, the same tests run compiled on CUDA tensors instead.

Every case is compared with the generic core (``force_generic``) on the same
input: NaN and +-inf in the same places, finite values within ``ULP`` units
of the output dtype (see :func:`assert_close`), and every case checks that a
kernel really ran. The compile check builds every kernel and dtype for sm_80
and sm_90 in a subprocess without the interpreter, runs ptxas on the PTX, and
asserts no spills (it prints the registers).

``SOFTMAX_XP_GPU_LOGIC=1`` (the nox session tests-gpu-logic) turns a missing
torch or Triton into an error instead of a skip.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import softmax_xp as sx

_STRICT = os.environ.get("SOFTMAX_XP_GPU_LOGIC", "") == "1"


def _need(name: str) -> Any:
    if _STRICT:  # tests-gpu-logic: a missing tool is an error
        return importlib.import_module(name)
    return pytest.importorskip(name)


torch = _need("torch")
_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not _GPU and "softmax_xp._fast.torch_triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"  # before @triton.jit runs
triton = _need("triton")
tt = importlib.import_module("softmax_xp._fast.torch_triton")
if not _GPU and not tt._INTERPRET:
    pytest.skip(
        "softmax_xp._fast.torch_triton was imported compiled before this module "
        "could set TRITON_INTERPRET=1; run this file alone or with TRITON_INTERPRET=1",
        allow_module_level=True,
    )
DEVICE = "cuda" if _GPU else "cpu"

NAN, INF = math.nan, math.inf
DTYPES = ("float16", "bfloat16", "float32", "float64")
EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}
TINY = {
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float32": 2.0**-126,
    "float64": 2.0**-1022,
}
# units of the output dtype's eps (relative, plus the scale each test gives):
# the kernels and the generic core evaluate the same formulas in the same
# compute dtype, differing only in summation order (a tree against a pairwise
# sum, and the online rescaling of long rows), a few float32 / float64 ulp of
# the row sum; a half-precision output rounded once from float32 values that
# differ by that much is within 1 ulp of the generic one
ULP = {"float16": 1, "bfloat16": 1, "float32": 8, "float64": 8}
LENGTHS = (1, 2, 3, 127, 128, 129, 4097, 70_000)
FUNCS: dict[str, Callable[..., Any]] = {
    "softmax": sx.softmax,
    "log_softmax": sx.log_softmax,
    "softmin": sx.softmin,
    "logsumexp": lambda x, **kw: sx.logsumexp(x, axis=kw.pop("axis", -1), **kw),
}


@pytest.fixture(autouse=True)
def _triton_path() -> Iterator[None]:
    """The fast paths on (even under SOFTMAX_XP_FORCE_GENERIC=1), CPU tensors to Triton."""
    with sx.force_generic(False), tt._on_cpu(not _GPU):
        yield


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the kernels launched in the test."""
    seen: list[str] = []
    launch = tt._launch

    def counted(kernel: Any, *args: Any, **kwargs: Any) -> None:
        seen.append(kernel.fn.__name__)
        launch(kernel, *args, **kwargs)

    monkeypatch.setattr(tt, "_launch", counted)
    return seen


def generic(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with sx.force_generic():
        return fn(*args, **kwargs)


def tensor(a: Any, dtype: str) -> Any:
    return (
        torch.as_tensor(np.asarray(a, dtype=np.float64))
        .to(getattr(torch, dtype))
        .to(DEVICE)
    )


def rows_with_specials(
    n: int, rows: int, rng: np.random.Generator, spread: float = 8.0
) -> np.ndarray:
    """Random rows, the first ones special: NaN, one +inf, two +inf, all -inf, some -inf, peaked.

    The last two rows are always plain ones (they check the finite formula).
    """
    x = rng.standard_normal((rows, n)) * spread
    specials = [
        lambda r: r.__setitem__(rng.integers(n), NAN),
        lambda r: r.__setitem__(rng.integers(n), INF),
        lambda r: r.__setitem__(rng.choice(n, min(n, 2), replace=False), INF),
        lambda r: r.__setitem__(slice(None), -INF),
        lambda r: r.__setitem__(rng.random(n) < 0.5, -INF),
        lambda r: r.__setitem__(rng.integers(n), 60.0),  # peaked: log1p(s') small
    ]
    for row, make in zip(x[: max(0, rows - 2)], specials, strict=False):
        make(row)
    return x


def assert_close(
    actual: Any, expected: Any, dtype: str, scale: Any = 0.0, ulp: int | None = None
) -> None:
    """Same NaN and +-inf positions; finite values within ``ulp * eps * (|expected| + scale)``."""
    a = actual.detach().to("cpu", torch.float64).numpy()
    e = expected.detach().to("cpu", torch.float64).numpy()
    assert a.shape == e.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg="NaN positions")
    np.testing.assert_array_equal(
        np.isposinf(a), np.isposinf(e), err_msg="+inf positions"
    )
    np.testing.assert_array_equal(
        np.isneginf(a), np.isneginf(e), err_msg="-inf positions"
    )
    fin = np.isfinite(e)
    n = ULP[dtype] if ulp is None else ulp
    tol = n * EPS[dtype] * (np.abs(e) + np.asarray(scale)) + TINY[dtype]
    err = np.abs(np.where(fin, a, 0.0) - np.where(fin, e, 0.0))
    worst = np.max(np.where(fin, err - tol, -1.0), initial=-1.0)
    assert worst <= 0, (
        f"off by up to {np.max(err / tol, initial=0):.3g}x the tolerance ({n} ulp)"
    )


def run_both(name: str, x: Any, **kw: Any) -> tuple[Any, Any]:
    fn = FUNCS[name]
    return fn(x, **kw), generic(fn, x, **kw)


def row_scale(name: str, x: Any, axis: int = -1) -> Any:
    """logsumexp's ``m + log1p(s')`` can cancel: its error scales with ``|m|`` too."""
    if name != "logsumexp":
        return 0.0
    xf = torch.nan_to_num(x.detach().to("cpu", torch.float64), posinf=0.0, neginf=0.0)
    return xf.abs().amax(axis).numpy()


def _rows_for(n: int) -> int:
    return 8 if n > 200 else 12


# ---------------------------------------------------------------------------
# forward


# every length, dtype and kind; softmin (softmax's kernel with NEGATE) on the
# chunked rows in float32 only (see test_backward)
@pytest.mark.parametrize(
    ("name", "n", "dtype"),
    [
        (f, n, d)
        for f in FUNCS
        for n in LENGTHS
        for d in DTYPES
        if n < 4000 or f != "softmin" or d == "float32"
    ],
)
def test_forward_rows(name: str, n: int, dtype: str, launches: list[str]) -> None:
    rng = np.random.default_rng(n)
    x = tensor(rows_with_specials(n, _rows_for(n), rng), dtype)
    x0 = x.clone()
    y, ref = run_both(name, x)
    assert launches == ["_forward"]
    assert y.dtype == ref.dtype
    assert y.shape == ref.shape
    assert y.device == x.device
    torch.testing.assert_close(x, x0, rtol=0, atol=0, equal_nan=True)  # unmodified
    assert y.data_ptr() != x.data_ptr()
    assert_close(y, ref, dtype, row_scale(name, x))


@pytest.mark.parametrize("n", [1, 3, 129, 4097])
@pytest.mark.parametrize("name", list(FUNCS))
def test_masks(name: str, n: int, launches: list[str]) -> None:
    """Full-shape and broadcast masks; masked entries hold NaN and +inf, which must not matter."""
    rng = np.random.default_rng(7 + n)
    x = rows_with_specials(n, 8, rng)
    x[:, ::3] = NAN
    x[:, 1::4] = INF
    xt = tensor(x, "float32")
    full = torch.as_tensor(rng.random((8, n)) < 0.6, device=DEVICE)
    full[:, ::3] = False
    full[:, 1::4] = False
    full[6] = False  # a row with nothing left
    row = torch.as_tensor(rng.random(n) < 0.5, device=DEVICE)
    row[::3] = False
    row[1::4] = False
    for where in (full, row, torch.ones((8, 1), dtype=torch.bool, device=DEVICE)):
        y, ref = run_both(name, xt, where=where)
        assert_close(y, ref, "float32", row_scale(name, xt))
    assert launches == ["_forward"] * 3


# the interpreter takes seconds per pass over rows of 70,000: one dtype there (the
# chunked loop of every dtype runs at 4097, and at 70,000 in test_forward_rows)
@pytest.mark.parametrize(
    ("dtype", "n"),
    [
        (d, n)
        for d in ("bfloat16", "float32", "float64")
        for n in (3, 129, 4097, 70_000)
        if n < 5000 or d == "float32"
    ],
)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_temperature(name: str, n: int, dtype: str, launches: list[str]) -> None:
    """A Python scalar and an array temperature (broadcast rows, its own dtype)."""
    rng = np.random.default_rng(11 + n)
    x = tensor(rows_with_specials(n, 4 if n > 5000 else 8, rng), dtype)
    t_arr = torch.as_tensor(
        rng.uniform(0.05, 3.0, n), dtype=torch.float32, device=DEVICE
    )
    temperatures: list[Any] = [0.3, t_arr.to(torch.float64)[None, :]]
    if n < 5000:  # the interpreter takes seconds per pass over the longest rows
        temperatures += [7.0, 1e-3, t_arr]
    for t in temperatures:
        y, ref = run_both(name, x, temperature=t)
        assert_close(y, ref, dtype)
    assert launches == ["_forward"] * len(temperatures)


@pytest.mark.parametrize("name", list(FUNCS))
def test_integer_and_bool_input(name: str, launches: list[str]) -> None:
    rng = np.random.default_rng(3)
    for x in (
        torch.as_tensor(rng.integers(-50, 50, (6, 130)), device=DEVICE),
        torch.as_tensor(
            rng.integers(-100, 100, (4, 9)), dtype=torch.int32, device=DEVICE
        ),
        torch.as_tensor(rng.random((5, 7)) < 0.5, device=DEVICE),
    ):
        y, ref = run_both(name, x)
        assert y.dtype == ref.dtype == torch.get_default_dtype()
        assert_close(y, ref, "float32", row_scale(name, x.double()))
    y, ref = run_both(
        name,
        torch.as_tensor(rng.integers(-9, 9, (3, 70)), device=DEVICE),
        dtype=torch.float16,
    )
    assert_close(y, ref, "float16")
    assert launches == ["_forward"] * 4


@pytest.mark.parametrize("name", list(FUNCS))
def test_narrowing_dtype(name: str, launches: list[str]) -> None:
    """``dtype=`` rounds x first: values beyond float32's range become +-inf there."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 40)) * 30
    x[0, 3] = 1e300
    x[1, :5] = -1e300
    x[2, 7] = 1e-300
    x64 = tensor(x, "float64")
    # the interpreter casts with NumPy, which warns where IEEE rounding overflows
    stack = np.errstate(over="ignore", invalid="ignore")
    stack.__enter__()
    for out in ("float32", "float16", "bfloat16"):
        y, ref = run_both(name, x64, dtype=getattr(torch, out))
        assert y.dtype == getattr(torch, out)
        assert_close(y, ref, out, row_scale(name, torch.clamp(x64, -1e30, 1e30)))
    y, ref = run_both(name, tensor(x / 1e295, "float32"), dtype=torch.bfloat16)
    stack.__exit__(None, None, None)
    assert_close(y, ref, "bfloat16")
    assert launches == ["_forward"] * 4


@pytest.mark.parametrize("name", list(FUNCS))
def test_axes_and_strides(name: str, launches: list[str]) -> None:
    """Non-last axes, adjacent tuple axes, and non-contiguous views (no copy of x)."""
    rng = np.random.default_rng(9)
    # few rows: the interpreter runs one program per row, in turn
    base = tensor(rng.standard_normal((3, 5, 40)) * 5, "float32")
    base[1, 2, 3] = INF
    base[2, :, 4] = NAN
    cases: list[tuple[Any, Any]] = [
        (base, 0),
        (base, 1),
        (base, (1, 2)),
        (base, (0, 1)),
        (base[:, :, ::2], -1),  # strided rows
        (base[:, 1:4, 5:38:3], 1),
        (base[0].T, -1),  # a transposed 2-d x: rows of stride 40
        (base[0].T, 0),
    ]
    for x, axis in cases:
        y, ref = run_both(name, x, axis=axis)
        assert_close(y, ref, "float32", row_scale(name, x, axis))
    y, ref = (
        run_both("logsumexp", base, axis=(1, 2), keepdims=True)
        if name == "logsumexp"
        else (None, None)
    )
    if y is not None:
        assert y.shape == (3, 1, 1)
        assert_close(y, ref, "float32", 10.0)
    assert launches == ["_forward"] * (len(cases) + (name == "logsumexp"))


def test_fallbacks(launches: list[str]) -> None:
    """What the kernels do not cover returns to today's path (and still answers right)."""
    x = tensor(np.random.default_rng(1).standard_normal((4, 6, 8)), "float32")
    cases: list[tuple[str, Any, dict[str, Any]]] = [
        ("softmax", x, {"axis": (0, 2)}),  # non-adjacent axes
        ("softmax", x, {"axis": ()}),
        ("softmax", x[:0], {}),  # empty
        ("softmax", x.transpose(0, 1), {}),  # (outer) dims that no view merges
        (
            "softmax",
            x,
            {"where": torch.ones((4, 1, 8), dtype=torch.bool, device=DEVICE)},
        ),
        ("logsumexp", x, {"b": x.abs()}),
        ("logsumexp", x, {"return_sign": True}),
        (
            "log_softmax",
            x,
            {"temperature": torch.full((8,), 2.0, device=DEVICE, requires_grad=True)},
        ),
    ]
    for name, xi, kw in cases:
        fn = FUNCS[name] if name != "logsumexp" else sx.logsumexp
        out, ref = fn(xi, **kw), generic(fn, xi, **kw)
        for a, b in zip(
            out if isinstance(out, tuple) else (out,),
            ref if isinstance(ref, tuple) else (ref,),
            strict=True,
        ):
            assert_close(a, b, "float32", 10.0)
    assert launches == []


# ---------------------------------------------------------------------------
# backward


def _grads(name: str, x: Any, g: Any, generic_core: bool, **kw: Any) -> tuple[Any, Any]:
    xr = x.detach().clone().requires_grad_(True)
    y = generic(FUNCS[name], xr, **kw) if generic_core else FUNCS[name](xr, **kw)
    y.backward(g)
    return y.detach(), xr.grad


# The interpreter takes seconds per long row. Rows of 70,000 for a half and a
# single precision output only; softmin (softmax's kernel with NEGATE) on the
# long rows in float32 only: its negation is the same code at every length.
@pytest.mark.parametrize(
    ("name", "dtype", "n"),
    [
        (f, d, n)
        for f in FUNCS
        for d in DTYPES
        for n in (1, 3, 129, 4097, 70_000)
        if (n < 5000 or d in ("bfloat16", "float32"))
        and (n < 4000 or f != "softmin" or d == "float32")
    ],
)
def test_backward(name: str, n: int, dtype: str, launches: list[str]) -> None:
    """Gradients against the generic core's autograd: special rows, masks, temperature."""
    rng = np.random.default_rng(17 + n)
    rows = 3 if n > 5000 else 8
    x = tensor(rows_with_specials(n, rows, rng, spread=3.0), dtype)
    out_shape = (rows,) if name == "logsumexp" else (rows, n)
    g = torch.as_tensor(rng.standard_normal(out_shape), device=DEVICE).to(x.dtype)
    where = torch.as_tensor(rng.random((rows, n)) < 0.7, device=DEVICE)
    t_arr = torch.as_tensor(rng.uniform(0.2, 3.0, n), device=DEVICE)
    options: list[dict[str, Any]] = [{"where": where}]
    if name != "logsumexp":
        options += [{"temperature": t_arr, "where": where}]
    if n < 5000:  # the longest rows: the interpreter takes seconds per pass
        options += [{}] if name == "logsumexp" else [{}, {"temperature": 0.7}]
    for kw in options:
        y, gx = _grads(name, x, g, False, **kw)
        ref_y, ref_gx = _grads(name, x, g, True, **kw)
        assert_close(y, ref_y, dtype, row_scale(name, x))
        assert gx.dtype == x.dtype
        # an entry's gradient is a difference of terms as large as the row's
        # cotangents (softmaxes: their sum, times 1/t <= 5); logsumexp's
        # exp(z - lse) errs by |z - lse| ulp
        gabs = g.detach().abs().double().cpu().numpy()
        if name == "logsumexp":
            scale = gabs[:, None] * (1.0 + row_scale(name, x)[:, None])
        else:
            scale = 5.0 * gabs.sum(-1, keepdims=True)
        assert_close(gx, ref_gx, dtype, scale)
    kernel = "_lse_backward" if name == "logsumexp" else "_softmax_backward"
    assert launches == ["_forward", kernel] * len(options)


@pytest.mark.parametrize("name", list(FUNCS))
def test_double_backward(name: str, launches: list[str]) -> None:
    """``create_graph=True``: the gradient is differentiable again (a Hessian-vector
    product), through the generic core; the forward still ran the kernel."""
    rng = np.random.default_rng(5)
    x = tensor(rng.standard_normal((3, 7)) * 2.0, "float64")
    x[1, 2] = -INF
    where = torch.as_tensor(rng.random((3, 7)) < 0.8, device=DEVICE)
    kw: dict[str, Any] = {"where": where}
    if name != "logsumexp":
        kw["temperature"] = 0.7
    g = torch.as_tensor(rng.standard_normal(3 if name == "logsumexp" else (3, 7)))
    v = torch.as_tensor(rng.standard_normal((3, 7)))

    def hvp(generic_core: bool) -> tuple[Any, Any]:
        xr = x.detach().clone().requires_grad_(True)
        fn = FUNCS[name]
        y = generic(fn, xr, **kw) if generic_core else fn(xr, **kw)
        (gx,) = torch.autograd.grad(y, xr, g.to(DEVICE), create_graph=True)
        (hv,) = torch.autograd.grad(gx, xr, v.to(DEVICE))
        return gx.detach(), hv

    gx, hv = hvp(False)
    ref_gx, ref_hv = hvp(True)
    assert launches[0] == "_forward"
    # the second derivative is not 0 for any of the four: the test can fail
    assert float(ref_hv.abs().max()) > 1e-3
    assert_close(gx, ref_gx, "float64", 10.0)
    assert_close(hv, ref_hv, "float64", 10.0)


# ---------------------------------------------------------------------------
# memory: nothing full-size but the output


def test_launcher_allocates_only_the_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor operation of the launcher, forward and backward, with the kernels stubbed out.

    A ``TorchDispatchMode`` records each ATen operation the ops' Python
    bodies run (entering them itself: a custom op is one dispatch). Triton
    kernels cannot allocate, and the interpreter copies its arguments to
    NumPy, so the launch is stubbed here: what is left is the launcher, which
    must allocate the output (backward: the gradient) and per-row statistics,
    and copy nothing full-size. A broadcast mask is an ``expand`` view.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    impls = {
        "softmax_xp.triton_forward.default": tt._forward_impl,
        "softmax_xp.triton_softmax_backward.default": tt._softmax_backward_impl,
        "softmax_xp.triton_lse_backward.default": tt._lse_backward_impl,
    }
    made: list[tuple[str, int]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            impl = impls.get(str(func))
            if impl is not None:
                with Record():
                    return impl(*args, **(kwargs or {}))
            out = func(*args, **(kwargs or {}))
            storages = {
                a.untyped_storage().data_ptr()
                for a in args
                if isinstance(a, torch.Tensor)
            }
            for o in out if isinstance(out, (tuple, list)) else (out,):
                if (
                    isinstance(o, torch.Tensor)
                    and o.untyped_storage().data_ptr() not in storages
                ):
                    made.append((str(func), o.numel()))  # a new allocation, not a view
            return out

    monkeypatch.setattr(tt, "_launch", lambda *a, **k: None)
    n, rows = 1000, 16
    x = torch.zeros((rows, n), device=DEVICE, requires_grad=True)
    where = torch.ones((n,), dtype=torch.bool, device=DEVICE)
    for name, fn in FUNCS.items():
        y = fn(x, where=where)
        g = torch.ones_like(y)
        made.clear()
        with Record():
            y = fn(x, where=where)
            y.backward(g)
        big = [f for f, k in made if k > rows]
        # forward: the output (logsumexp's has one entry per row); backward:
        # the gradient; nothing else beyond per-row values
        assert big == ["aten.empty.memory_format"] * (
            1 if name == "logsumexp" else 2
        ), made
        assert x.grad is not None
        x.grad = None


# ---------------------------------------------------------------------------
# torch.compile


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inductor's own
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile(backend: str, launches: list[str]) -> None:
    """One graph (fullgraph: no break) holding the kernel's op, the same answer, gradients too."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()

    def f(x: Any, w: Any) -> Any:
        return sx.log_softmax(x, where=w) * 2 + sx.softmax(x, axis=0).sum()

    rng = np.random.default_rng(2)
    x = tensor(rows_with_specials(33, 8, rng), "float32").requires_grad_(True)
    w = torch.as_tensor(rng.random(33) < 0.8, device=DEVICE)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(f, fullgraph=True, backend=counter)
    y = compiled(x, w)
    assert counter.frame_count == 1
    ops = [str(node.target) for node in counter.graphs[0].graph.nodes]
    assert sum("softmax_xp.triton_forward" in op for op in ops) == 2, ops
    ref = generic(f, x, w)
    assert_close(y, ref, "float32")
    (gx,) = torch.autograd.grad(y.sum(), x)
    (ref_gx,) = torch.autograd.grad(ref.sum(), x)
    assert_close(gx, ref_gx, "float32", 40.0)
    if not (_GPU and backend == "inductor"):  # inductor launches the kernels itself
        assert "_forward" in launches
        assert "_softmax_backward" in launches


# ---------------------------------------------------------------------------
# compile check: sm_80 and sm_90, every kernel and dtype, no spills

_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, os, re, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from softmax_xp._fast import torch_triton as tt

    assert not tt._INTERPRET
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    PTR = {"float16": "*fp16", "bfloat16": "*bf16", "float32": "*fp32", "float64": "*fp64"}

    def configs(dtype):
        f64 = dtype == "float64"
        stat = "*fp64" if f64 else "*fp32"
        p = PTR[dtype]
        for single in (True, False):
            block = tt._SINGLE_MAX[f64] if single else tt._CHUNK[f64]
            warps = tt._blocks(block if single else block + 1, f64)[2]
            for kind in (0, 1, 2):
                yield (f"forward kind={kind} single={single}", tt._forward,
                       dict(X=p, W="*i1", T=p, Y=p, STAT=stat if kind == 2 else "*i8", t_scalar="fp64"),
                       dict(KIND=kind, NEGATE=kind == 0, HAS_W=True, T_MODE=2 if kind < 2 else 0,
                            IS_INT=False, ROUND=0, F64=f64, WRITE_STAT=True, BLOCK=block, SINGLE=single), warps)
            for log in (False, True):
                yield (f"softmax_backward log={log} single={single}", tt._softmax_backward,
                       dict(Y=p, G=p, W="*i1", X=p, T=p, GX=p, STAT="*i8", t_scalar="fp64"),
                       dict(LOG=log, NEGATE=True, HAS_W=True, T_MODE=2, ROUND=0, F64=f64, HALF_OUT=dtype in ("float16", "bfloat16"), BLOCK=block, SINGLE=single), warps)
        block = tt._CHUNK[f64]
        yield ("lse_backward", tt._lse_backward, dict(X=p, W="*i1", G=p, STAT=stat, GX=p),
               dict(HAS_W=True, ROUND=0, F64=f64, BLOCK=block), tt._blocks(block + 1, f64)[2])

    results = []
    tmp = tempfile.mkdtemp()
    for cc in (80, 90):
        for dtype in PTR:
            for label, fn, ptrs, consts, warps in configs(dtype):
                sig = {name: "i32" for name in fn.arg_names}
                sig.update(ptrs)
                sig.update({k: "constexpr" for k in consts})
                src = ASTSource(fn=fn, signature=sig, constexprs=consts)
                c = triton.compile(src, target=GPUTarget("cuda", cc, 32), options={"num_warps": warps})
                ptx = os.path.join(tmp, "k.ptx")
                with open(ptx, "w") as fh:
                    fh.write(c.asm["ptx"])
                arch = "sm_90a" if cc == 90 else "sm_80"
                r = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", ptx, "-o", ptx + ".o"],
                                   capture_output=True, text=True, check=True)
                spills = [int(v) for v in re.findall(r"(\\d+) bytes spill (?:stores|loads)", r.stderr)]
                regs = [int(v) for v in re.findall(r"Used (\\d+) registers", r.stderr)]
                results.append(dict(cc=cc, dtype=dtype, kernel=label, block=consts["BLOCK"],
                                    warps=warps, registers=regs[0], spill_bytes=sum(spills)))
    print(json.dumps(results))
    """
)


@pytest.mark.skipif(
    sys.platform != "linux", reason="the triton wheel's ptxas is for Linux"
)
def test_compile_sm80_sm90_no_spills() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) == 2 * 4 * 11
    print(
        "\ncc dtype     kernel                                  block warps regs spills"
    )
    for r in results:
        print(
            f"{r['cc']} {r['dtype']:9} {r['kernel']:40} {r['block']:5} {r['warps']:5} {r['registers']:4} {r['spill_bytes']}"
        )
    assert all(r["spill_bytes"] == 0 for r in results), [
        r for r in results if r["spill_bytes"]
    ]
