"""The CuPy fast path's CUDA kernels (``src/softmax_xp/_fast/cupy_kernels.cu``).

Without a GPU: their algorithm runs on the CPU in the twin (``_cuda_twin.py``,
on the very launch plan the CuPy path makes) and is compared with the generic
core on NumPy arrays; and every instantiation is compiled by NVRTC for sm_80
and sm_90, with no spills. With a GPU (and CuPy): the kernels themselves
against the generic core on CuPy arrays, and their memory.

The twin and the compile check need NumPy (and ml_dtypes for bfloat16) and
NVRTC (the ``nvidia-cuda-nvrtc-cu12`` wheel); they skip when a tool is
missing, unless ``SOFTMAX_XP_GPU_LOGIC=1`` (nox's tests-gpu-logic), where a
missing tool is an error.

Tolerance against the generic core: float16 / bfloat16 outputs within 1 ulp
(both compute in float32, and the rounded results may fall on either side of
a rounding boundary); float32 / float64 within :data:`ULPS` ulp of the
output dtype: both paths' ``exp`` err by up to ~2 ulp (CUDA's ``expf``: 2;
NumPy's SIMD ``exp``: below 2.5), the kernel multiplies by ``1 / (1 + r)``
where the generic core divides (one more rounding), and the two sums of
``exp`` run in different orders (a per-thread chunk, then trees, against a
pairwise sum), each a few half-ulps relative. logsumexp's ulps are counted
at the scale of its larger operand, ``max(|lse|, |m|)``: ``m + log1p(r)``
cancels when ``m < 0``, and the generic core computes NumPy float32 in
float64.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

import _cuda_twin as twin
import numpy as np
import pytest

import softmax_xp as sx
from softmax_xp._call import input_rounding
from softmax_xp._fast import cupy as cupy_path
from softmax_xp._validation import prepare, prepare_logsumexp

GPU_LOGIC = os.environ.get("SOFTMAX_XP_GPU_LOGIC", "") == "1"
ULPS = 4
LENGTHS = (1, 2, 3, 127, 128, 129, 4097, 70_000)
FUNCS = ("softmax", "log_softmax", "softmin", "logsumexp")
DTYPES = ("float16", "bfloat16", "float32", "float64")
_BITS = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}


def _need(module: str) -> Any:
    """Import a tool; a skip without it, an error under SOFTMAX_XP_GPU_LOGIC=1."""
    if GPU_LOGIC:
        return __import__(module)
    return pytest.importorskip(module)


def _dtype(name: str) -> Any:
    if name == "bfloat16":
        _need("ml_dtypes")
    return twin.np_dtype(name)


# ---------------------------------------------------------------------------
# inputs and the comparison


def _rows(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """float64 rows with the contract's special rows first (as many as fit)."""
    x = rng.normal(size=(rows, n)) * 4.0
    specials = [
        lambda r: r.__setitem__(rng.integers(n), np.nan),  # a NaN
        lambda r: r.__setitem__(rng.integers(n), np.inf),  # one +inf
        lambda r: r.__setitem__(slice(0, n, 2), np.inf),  # several +inf
        lambda r: r.__setitem__(slice(None), -np.inf),  # nothing left
        lambda r: r.__setitem__(slice(0, n, 3), -np.inf),  # some -inf
        lambda r: r.__setitem__(slice(None), 7.5),  # all tied
    ]
    for i, put in enumerate(specials[:rows]):
        put(x[i])
    return x


def _ulp(v: np.ndarray, name: str) -> np.ndarray:
    """The ulp in dtype ``name`` at magnitude ``|v|`` (float64 values)."""
    p, emin = _BITS[name]
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.abs(v)))
    e = np.maximum(np.where(np.isfinite(e), e, emin), emin)
    return np.ldexp(1.0, (e - p + 1).astype(int))


def assert_close(actual: Any, ref: Any, name: str, scale: Any = None) -> None:
    """Same NaN and infinities; finite values within the module's ulp bound."""
    a = np.asarray(actual).astype(np.float64)
    r = np.asarray(ref).astype(np.float64)
    assert a.shape == r.shape
    assert np.array_equal(np.isnan(a), np.isnan(r)), "NaN positions differ"
    inf = np.isinf(r)
    assert np.array_equal(a[inf], r[inf]), "infinities differ"
    assert not np.isinf(a[~inf]).any(), "an infinity where the reference is finite"
    fin = np.isfinite(r)
    ulps = 1 if name in ("float16", "bfloat16") else ULPS
    mag = np.abs(r) if scale is None else np.maximum(np.abs(r), np.abs(scale))
    err = np.abs(a[fin] - r[fin]) / _ulp(mag, name)[fin]
    assert err.size == 0 or err.max() <= ulps, f"{err.max():.3g} ulp > {ulps}"


def _twin_and_generic(func: str, x: Any, **kw: Any) -> tuple[Any, Any]:
    """The twin's result on the CuPy path's plan, and the generic core's."""
    kind = "softmax" if func == "softmin" else func
    opts: dict[str, Any] = {"negate": True} if func == "softmin" else {}
    if func == "logsumexp":
        keepdims = kw.pop("keepdims", False)
        call = prepare_logsumexp(
            x,
            kw.pop("axis", -1),
            None,
            kw.pop("where", None),
            kw.pop("dtype", None),
            None,
        )
        opts = {"keepdims": keepdims, "return_sign": False}
        # NumPy computes float32 logsumexp in float64 (lse_compute_dtype); the
        # CuPy call, which the kernel gets, computes in float32
        compute = np.dtype(cupy_path.compute_name(str(call.out_dtype)))
        call = dataclasses.replace(call, compute_dtype=compute)
        kw_generic = {"axis": call.axes, "keepdims": keepdims, "where": call.where}
    else:
        call = prepare(
            func,
            x,
            kw.pop("axis", -1),
            kw.pop("where", None),
            kw.pop("temperature", None),
            kw.pop("dtype", None),
            None,
        )
        kw_generic = {
            "axis": call.axes,
            "where": call.where,
            "temperature": call.temperature,
        }
    assert not kw
    before = np.array(x, copy=True)
    got = twin.run(kind, call, **opts)
    assert got is not None, "the CuPy path would fall back"
    with sx.force_generic():
        ref = getattr(sx, func)(x, dtype=call.out_dtype, **kw_generic)
    np.testing.assert_array_equal(np.asarray(x), before)  # the input is untouched
    assert got.dtype == ref.dtype
    return got, ref


def _row_max(x: np.ndarray, axes: tuple[int, ...], where: Any = None) -> np.ndarray:
    """The largest finite entry of each slice (0 where none): logsumexp's scale."""
    v = np.asarray(x, dtype=np.float64)
    keep = np.isfinite(v) if where is None else np.isfinite(v) & where
    return np.max(np.where(keep, np.abs(v), 0.0), axis=axes)


# ---------------------------------------------------------------------------
# the twin against the generic core


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", FUNCS)
def test_twin_matches_generic(func: str, dtype: str, n: int) -> None:
    rng = np.random.default_rng([n, DTYPES.index(dtype), FUNCS.index(func)])
    rows = 7 if n < 4000 else 6
    x = _rows(rng, rows, n).astype(_dtype(dtype))
    got, ref = _twin_and_generic(func, x)
    scale = _row_max(x, (1,)) if func == "logsumexp" else None
    assert_close(got, ref, dtype, scale)


def _options(
    rng: np.random.Generator, n: int
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Named configurations: masks, temperatures, axes, strides, dtypes."""
    x = _rows(rng, 6, n)
    x3 = rng.normal(size=(2, n, 3)) * 3.0
    x3[0, :, 1] = np.inf
    full = rng.random(x.shape) < 0.7
    full[0] = False  # the NaN row: all masked, so nothing is left
    masked_nan = x.copy()
    masked_nan[1, ::2] = np.nan
    mask_nan = np.ones(x.shape, bool)
    mask_nan[1, ::2] = False
    wide = rng.normal(size=(6, 2 * n)) * 4.0
    return {
        "mask-full": (x, {"where": full}),
        "mask-row-broadcast": (x, {"where": rng.random((1, n)) < 0.5}),
        "mask-column-broadcast": (
            x,
            {"where": np.array([[True], [False], [True], [True], [False], [True]])},
        ),
        "mask-hides-nan": (masked_nan, {"where": mask_nan}),
        "temperature-scalar": (x, {"temperature": 0.37}),
        "temperature-array": (x, {"temperature": rng.uniform(0.1, 3.0, size=(6, n))}),
        "temperature-broadcast": (
            x,
            {"temperature": rng.uniform(0.1, 3.0, size=(6, 1))},
        ),
        "axis-middle": (x3, {"axis": 1}),
        # slices of 2 along axis 0: n * 3 of them would be the twin's slowest case
        "axis-first": (x3[:, :50], {"axis": 0}),
        "axes-tuple": (x3, {"axis": (1, 2)}),
        "strided": (wide[:, ::2], {}),
        "reversed": (x[::-1, ::-1], {}),
        "float32-input": (x.astype(np.float32), {}),
        "int64-input": (rng.integers(-30, 30, size=(4, n)), {}),
        "bool-input": (rng.random((4, n)) < 0.5, {}),
        "narrow-to-float32": (x * 1e10, {"dtype": np.float32}),
        "narrow-to-float16": (x * 3e3, {"dtype": np.float16}),
        "float32-to-float16": (x.astype(np.float32) * 3e3, {"dtype": np.float16}),
    }


OPTIONS = _options(np.random.default_rng(0), 3)
OPTION_NAMES = tuple(OPTIONS)
# (function, option): logsumexp takes no temperature
FUNC_OPTIONS = [
    (f, o)
    for f in FUNCS
    for o in OPTION_NAMES
    if not (f == "logsumexp" and "temperature" in OPTIONS[o][1])
]


@pytest.mark.parametrize("n", [1, 3, 129, 4097])
@pytest.mark.parametrize(("func", "option"), FUNC_OPTIONS)
def test_twin_options(func: str, option: str, n: int) -> None:
    x, kw = _options(np.random.default_rng([n, OPTION_NAMES.index(option)]), n)[option]
    if func == "logsumexp":
        kw = {**kw, "axis": kw.get("axis", -1)}
    got, ref = _twin_and_generic(func, x, **dict(kw))
    name = str(ref.dtype)
    scale = None
    if func == "logsumexp":
        axes = kw["axis"] if isinstance(kw["axis"], tuple) else (kw["axis"] % x.ndim,)
        w = kw.get("where")
        scale = _row_max(x, axes, None if w is None else np.broadcast_to(w, x.shape))
    assert_close(got, ref, name, scale)


def test_twin_logsumexp_keepdims() -> None:
    x = _rows(np.random.default_rng(5), 6, 129)
    got, ref = _twin_and_generic("logsumexp", x, axis=1, keepdims=True)
    assert got.shape == (6, 1)
    assert_close(got, ref, "float64", _row_max(x, (1,), None)[:, None])


# ---------------------------------------------------------------------------
# the launcher's plan


@pytest.mark.parametrize(
    ("what", "kind", "x", "kw"),
    [
        ("axis=()", "softmax", np.ones((2, 3)), {"axis": ()}),
        ("non-adjacent axes", "softmax", np.ones((2, 3, 4)), {"axis": (0, 2)}),
        ("empty", "softmax", np.ones((2, 0)), {}),
        (
            "transposed, axes merged",
            "softmax",
            np.ones((4, 3, 2)).transpose(2, 1, 0),
            {"axis": (1, 2)},
        ),
        ("float64 to bfloat16", "softmax", np.ones((2, 3)), {"dtype": "bfloat16"}),
        ("int16 input", "softmax", np.ones((2, 3), np.int16), {}),
        ("weights", "logsumexp", np.ones((2, 3)), {"b": np.ones(3)}),
        ("return_sign", "logsumexp", np.ones((2, 3)), {"return_sign": True}),
        ("complex", "logsumexp", np.ones((2, 3), complex), {}),
        ("few long rows", "softmax", np.ones((1, 2**20 + 1), np.float32), {}),
    ],
)
def test_plan_falls_back(what: str, kind: str, x: Any, kw: dict[str, Any]) -> None:
    if kw.get("dtype") == "bfloat16":
        kw = {**kw, "dtype": _dtype("bfloat16")}
    if kind == "logsumexp":
        call = prepare_logsumexp(x, kw.get("axis", -1), kw.get("b"), None, None, None)
        opts = {"keepdims": False, "return_sign": kw.get("return_sign", False)}
    else:
        call = prepare(kind, x, kw.get("axis", -1), None, None, kw.get("dtype"), None)
        opts = {}
    assert cupy_path.plan(kind, call, **opts) is None, what


def test_plan_views_without_copy() -> None:
    x = np.ones((5, 6, 7))[:, ::2, 1:]  # strided in every axis
    call = prepare("softmax", x, 1, np.ones((1, 3, 1), bool), None, None, None)
    p = cupy_path.plan("softmax", call)
    assert p is not None
    assert (p.outer, p.n, p.inner) == (5, 3, 6)
    assert p.x_strides == (42, 14, 1)
    assert p.w_strides == (0, 1, 0)


@pytest.mark.parametrize("kind", ["softmax", "logsumexp"])
def test_rounding_table_is_input_rounding(kind: str) -> None:
    """The kernels' rounding, by dtype name, is softmax_xp._call.input_rounding."""
    names = [*DTYPES, "int64", "bool"]
    for src in names:
        for out in DTYPES:
            x = np.ones(3, _dtype(src))
            if kind == "logsumexp":
                call = prepare_logsumexp(x, -1, None, None, _dtype(out), None)
            else:
                call = prepare(kind, x, -1, None, None, _dtype(out), None)
            from_src = x.dtype if src in DTYPES else _dtype(cupy_path.compute_name(out))
            want = input_rounding(call, from_src)
            got = cupy_path.rounding(kind, src, out)
            assert got == (None if want is None else np.dtype(want).name), (src, out)


# ---------------------------------------------------------------------------
# NVRTC: every instantiation compiles for sm_80 and sm_90, without spills


def _nvrtc() -> ctypes.CDLL:
    spec = (
        importlib.util.find_spec("nvidia.cuda_nvrtc")
        if importlib.util.find_spec("nvidia")
        else None
    )
    paths = []
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            paths += sorted(Path(root, "lib").glob("libnvrtc.so*"))
    for path in [*map(str, paths), "libnvrtc.so.12", "libnvrtc.so"]:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    if GPU_LOGIC:
        pytest.fail("NVRTC not found (install nvidia-cuda-nvrtc-cu12)")
    pytest.skip("NVRTC not found (install nvidia-cuda-nvrtc-cu12)")


def nvrtc_compile(arch: str, names: list[str]) -> tuple[int, str]:
    """Compile the kernels' instantiations ``names`` for ``arch``: (result, ptxas log)."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    src = cupy_path.source().encode()
    assert (
        lib.nvrtcCreateProgram(
            ctypes.byref(prog), src, b"cupy_kernels.cu", 0, None, None
        )
        == 0
    )
    try:
        for name in names:
            assert lib.nvrtcAddNameExpression(prog, name.encode()) == 0
        opts = [f"--gpu-architecture={arch}", "-Xptxas=-v", *cupy_path.OPTIONS]
        argv = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
        result = lib.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        return result, log.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def ptxas_table(log: str) -> dict[str, tuple[int, int]]:
    """``mangled kernel -> (registers, spill store bytes)`` from ptxas -v."""
    found = {}
    for block in log.split("Compiling entry function '")[1:]:
        name = block.split("'", 1)[0]
        spills = re.search(r"(\d+) bytes spill stores", block)
        regs = re.search(r"Used (\d+) registers", block)
        assert spills, block
        assert regs, block
        found[name] = (int(regs.group(1)), int(spills.group(1)))
    return found


@pytest.mark.parametrize("kind", tuple(cupy_path.KINDS))
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvrtc_compiles_without_spills(arch: str, kind: str) -> None:
    wanted = f", {cupy_path.KINDS[kind]}>"
    names = [n for n in cupy_path.instantiations() if n.endswith(wanted)]
    result, log = nvrtc_compile(arch, names)
    assert result == 0, log
    table = ptxas_table(log)
    assert len(table) == len(names)
    for name, (regs, spills) in sorted(table.items()):
        print(f"{arch} {kind} {name}: {regs} registers, {spills} bytes spilled")
    assert all(spills == 0 for _, spills in table.values()), log


def test_instantiations_cover_the_dtypes() -> None:
    names = cupy_path.instantiations()
    assert len(names) == len(set(names))
    for kind in cupy_path.KINDS:
        for src in DTYPES:
            for out in DTYPES:
                ok = (src, out) != ("float64", "bfloat16") or kind == "logsumexp"
                assert cupy_path.supported(kind, src, out) == ok


def test_kernel_source_ships_with_the_package() -> None:
    assert "sxp_rows" in cupy_path.source()
    assert cupy_path.source().count("#include") == 0  # NVRTC's default path only


# ---------------------------------------------------------------------------
# on a GPU: the kernels themselves


def _cupy() -> Any:
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("cupy: no CUDA device")
    except Exception as exc:  # noqa: BLE001 - cupy without a driver
        pytest.skip(f"cupy: no CUDA device ({exc})")
    return cp


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("func", FUNCS)
def test_cupy_matches_generic(func: str, dtype: str, n: int) -> None:
    cp = _cupy()
    rng = np.random.default_rng([n, 7])
    x = _rows(rng, 7 if n < 4000 else 6, n).astype(dtype)
    w = rng.random(x.shape) < 0.8
    for kw in ({}, {"where": cp.asarray(w)}):
        xc = cp.asarray(x)
        kind = "softmax" if func == "softmin" else func
        call = (
            prepare_logsumexp(xc, -1, None, kw.get("where"), None, None)
            if func == "logsumexp"
            else prepare(func, xc, -1, kw.get("where"), None, None, None)
        )
        opts: dict[str, Any] = (
            {"negate": func == "softmin"} if kind == "softmax" else {}
        )
        if func == "logsumexp":
            opts = {"keepdims": False, "return_sign": False}
        got = cupy_path.run(kind, call, **opts)
        assert got is not NotImplemented
        with sx.force_generic():
            ref = getattr(sx, func)(xc, axis=-1, **kw)
        scale = _row_max(x, (1,), w if kw else None) if func == "logsumexp" else None
        assert_close(got.get(), ref.get(), dtype, scale)


def test_cupy_memory_is_the_output() -> None:
    cp = _cupy()

    class Peak(cp.cuda.MemoryHook):  # type: ignore[misc]
        name = "peak"

        def __init__(self) -> None:
            super().__init__()
            self.total = 0

        def malloc_postprocess(self, **kw: Any) -> None:
            self.total += kw["mem_size"]

    x = cp.asarray(
        np.random.default_rng(1).normal(size=(4096, 4096)).astype(np.float32)
    )
    for fn in (sx.softmax, sx.log_softmax):
        fn(x)  # compiled and warm
        hook = Peak()
        with hook:
            y = fn(x)
        cp.cuda.get_current_stream().synchronize()
        assert hook.total <= math.ceil(y.nbytes / 512) * 512 + x.nbytes // 100
