"""The JAX Pallas kernels (``_fast/jax_pallas.py``) without a GPU.

The kernels run in Pallas's interpret mode on the CPU (``_fast.jax._PALLAS =
"interpret"``) through the public functions, and are compared with the
generic core (``softmax_xp.force_generic()``) within a few ulp of the output
dtype; their lowering for the ``cuda`` platform is checked to contain the
Triton custom call. A missing JAX (or a JAX without Pallas's Triton API) skips
the file, except under ``SOFTMAX_XP_GPU_LOGIC=1`` (nox's tests-gpu-logic),
where it is an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.environ.get("SOFTMAX_XP_GPU_LOGIC") == "1":
    import jax  # a missing tool is an error here
else:
    jax = pytest.importorskip("jax")

import jax.numpy as jnp

import softmax_xp as sx
from softmax_xp._fast import jax as fast_jax
from softmax_xp._fast import jax_pallas

if not jax_pallas.AVAILABLE:
    if os.environ.get("SOFTMAX_XP_GPU_LOGIC") == "1":
        msg = "jax.experimental.pallas.triton is not usable here"
        raise RuntimeError(msg)
    pytest.skip("this JAX lacks Pallas's Triton API", allow_module_level=True)

# float64 is part of the matrix (tests/conftest.py enables it too)
jax.config.update("jax_enable_x64", True)

KINDS = ("softmax", "log_softmax", "softmin", "logsumexp")
LENGTHS = (1, 2, 3, 127, 128, 129, 4097, 70_000)
# ulp of the output dtype: half precision is rounded once from float32, where
# a different order of the sum can flip the last bit; float32 / float64 sum
# the slice in another order than the generic core (tree within a block,
# chunks merged online) and exp(z - m) / (1 + r) carries one more rounding of r
ULP = {"float16": 1, "bfloat16": 1, "float32": 4, "float64": 4}


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Interpret mode on; yields the plans the kernels were launched with."""
    seen: list[Any] = []
    real = jax_pallas.launch

    def spy(plan: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(plan)
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(jax_pallas, "launch", spy)
    monkeypatch.setattr(fast_jax, "_PALLAS", "interpret")
    fast_jax._READY.clear()
    yield seen
    fast_jax._READY.clear()


def _fn(kind: str) -> Callable[..., Any]:
    return getattr(sx, kind)


def _ulp(v: np.ndarray, dtype: Any) -> np.ndarray:
    fi = jnp.finfo(dtype)
    mag = np.maximum(np.abs(v), float(fi.smallest_normal))
    return float(fi.eps) * 2.0 ** np.floor(np.log2(mag))


def assert_close(out: Any, ref: Any, n_ulp: int | None = None) -> None:
    """Same shape, dtype, NaN / inf pattern, finite values within ``n_ulp`` ulp."""
    if isinstance(ref, tuple):
        for o, r in zip(out, ref, strict=True):
            assert_close(o, r, n_ulp)
        return
    assert out.shape == ref.shape
    assert out.dtype == ref.dtype
    a = np.asarray(out.astype(jnp.float64))
    b = np.asarray(ref.astype(jnp.float64))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    inf = np.isinf(a) | np.isinf(b)
    np.testing.assert_array_equal(a[inf], b[inf])
    ok = ~np.isnan(a) & ~inf
    n = ULP[jnp.dtype(ref.dtype).name] if n_ulp is None else n_ulp
    tol = n * _ulp(b[ok], ref.dtype)
    err = np.abs(a[ok] - b[ok])
    assert np.all(err <= tol), f"max error {(err / _ulp(b[ok], ref.dtype)).max()} ulp"


def assert_grad_close(out: Any, ref: Any, terms: int = 1) -> None:
    """Gradients: same NaN / inf pattern, values within 32 eps of the largest.

    A gradient is a difference (``p (g - sum(p g))``): where it cancels, its
    own ulp says nothing, so the bound is on the scale of the whole array,
    times ``log2(terms)`` for a gradient that sums ``terms`` such differences
    (a temperature shared by a slice), added in another order on each path.
    """
    a = np.asarray(out.astype(jnp.float64))
    b = np.asarray(ref.astype(jnp.float64))
    assert out.shape == ref.shape
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(b)
    np.testing.assert_array_equal(a[~ok & ~np.isnan(b)], b[~ok & ~np.isnan(b)])
    eps = float(jnp.finfo(ref.dtype).eps)
    scale = np.abs(b[ok]).max(initial=0.0)
    tol = 32 * eps * max(1.0, np.log2(terms))
    np.testing.assert_allclose(a[ok], b[ok], rtol=tol, atol=tol * scale)


def _compare(kind: str, x: Any, launches: list[Any], **kw: Any) -> None:
    with sx.force_generic():
        ref = _fn(kind)(x, **kw)
    out = _fn(kind)(x, **kw)
    assert launches, "the Pallas kernel did not run"
    assert_close(out, ref)


def _rows(n: int, rows: int, dtype: Any = jnp.float32, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed + n)
    return jnp.asarray(rng.normal(0, 4, size=(rows, n)), dtype)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("kind", KINDS)
def test_row_lengths(kind: str, n: int, launches: list[Any]) -> None:
    rows = 3 if n <= 129 else (2 if n < 10_000 else 1)
    _compare(kind, _rows(n, rows), launches, axis=-1)
    assert launches[0].chunks == (1 if n <= 8192 else -(-n // launches[0].bn))


def _special(n: int) -> Any:
    """Rows: NaN, one +inf, three +inf, all -inf, mixed -inf, NaN with +inf, plain."""
    x = np.array(_rows(n, 7, jnp.float64, seed=1))
    inf, nan = np.inf, np.nan
    x[0, n // 2] = nan
    x[1, n - 1] = inf
    x[2, [0, n // 3, n - 1]] = inf
    x[3] = -inf
    x[4, ::2] = -inf
    x[5, 0], x[5, n - 1] = inf, nan
    return x


@pytest.mark.parametrize("n", [3, 129, 9000])
@pytest.mark.parametrize("kind", KINDS)
def test_special_rows(kind: str, n: int, launches: list[Any]) -> None:
    _compare(kind, jnp.asarray(_special(n), jnp.float32), launches, axis=-1)


@pytest.mark.parametrize(
    "dtype", ["float16", "bfloat16", "float32", "float64", "int32", "bool"]
)
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes(kind: str, dtype: str, launches: list[Any]) -> None:
    if dtype in ("int32", "bool"):
        rng = np.random.default_rng(2)
        x = jnp.asarray(rng.integers(-20, 20, size=(4, 300)), dtype)
    else:
        x = jnp.asarray(_special(300), dtype)
    _compare(kind, x, launches, axis=-1)


@pytest.mark.parametrize("dtype", ["bfloat16", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_dtypes_chunked(kind: str, dtype: str, launches: list[Any]) -> None:
    _compare(kind, jnp.asarray(_special(9000), dtype), launches, axis=-1)
    assert launches[0].chunks > 1


@pytest.mark.parametrize("kind", KINDS)
def test_narrowing_dtype(kind: str, launches: list[Any]) -> None:
    x = _special(40)
    x[6, :3] = [1e308, 0.0, -1e308]
    x = jnp.asarray(x, jnp.float64)
    for dtype in (jnp.float32, jnp.float16):
        _compare(kind, x, launches, axis=-1, dtype=dtype)


def _mask(shape: tuple[int, ...], seed: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.random(shape) > 0.3)


# softmin is softmax's kernel on -x: its chunked case runs in test_row_lengths
@pytest.mark.parametrize(
    ("kind", "n"),
    [(k, n) for k in KINDS for n in (129, 9000) if n < 9000 or k != "softmin"],
)
def test_where(kind: str, n: int, launches: list[Any]) -> None:
    x = _special(n)
    x[6, 1] = np.nan  # masked below: ignored
    w = np.array(_mask(x.shape))
    w[6, 1] = False
    w[4] = False  # nothing left
    x = jnp.asarray(x, jnp.float32)
    _compare(kind, x, launches, axis=-1, where=jnp.asarray(w))
    # broadcast masks: one per row position, one per row
    _compare(kind, x, launches, axis=-1, where=_mask((n,)))
    _compare(kind, x, launches, axis=-1, where=_mask((7, 1)))


@pytest.mark.parametrize("kind", KINDS)
def test_where_materialised(kind: str, launches: list[Any]) -> None:
    """A mask that broadcasts over part of a group of axes is broadcast in full."""
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 3, 50)), jnp.float32)
    _compare(kind, x, launches, axis=-1, where=_mask((2, 1, 50)))


@pytest.mark.parametrize(
    ("kind", "n"),
    [("softmax", 129), ("softmax", 9000), ("log_softmax", 129), ("log_softmax", 9000),
     ("softmin", 129)],
)  # fmt: skip
def test_temperature(kind: str, n: int, launches: list[Any]) -> None:
    x = jnp.asarray(_special(n), jnp.float32)
    rng = np.random.default_rng(5)
    _compare(kind, x, launches, temperature=0.3)
    _compare(kind, x, launches, temperature=jnp.asarray(rng.random((7, 1)) + 0.1))
    t = jnp.asarray(rng.random((7, n)) + 0.1, jnp.float32)
    _compare(kind, x, launches, temperature=t, where=_mask((7, n)))
    # half input, float32 temperature: x / T in float32
    _compare(kind, x.astype(jnp.float16), launches, temperature=t)


@pytest.mark.parametrize("kind", KINDS)
def test_axes(kind: str, launches: list[Any]) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(0, 3, size=(3, 130, 5))
    x[0, 7, 1] = np.inf
    x[1, :, 2] = -np.inf
    x[2, 4, 4] = np.nan
    x = jnp.asarray(x, jnp.float32)
    for axis in (0, 1, (1, 2), (0, 1)):
        _compare(kind, x, launches, axis=axis, where=_mask((130, 1)))
    long = jnp.asarray(rng.normal(size=(2, 9000, 3)), jnp.float32)
    _compare(kind, long, launches, axis=1)
    # not contiguous input (a transposed view)
    _compare(kind, x[:, :, 0].T, launches, axis=0)


def test_logsumexp_options(launches: list[Any]) -> None:
    x = jnp.asarray(_special(129), jnp.float32)
    _compare("logsumexp", x, launches)  # axis=None: one slice
    _compare("logsumexp", x, launches, axis=1, keepdims=True)
    _compare("logsumexp", x, launches, axis=1, return_sign=True)
    low = jnp.asarray([[-70000.0, -70001.0], [0.0, 1.0]], jnp.float32)
    _compare("logsumexp", low, launches, axis=1, return_sign=True, dtype=jnp.float16)


def test_not_covered_falls_back(launches: list[Any]) -> None:
    x = jnp.asarray(np.random.default_rng(7).normal(size=(3, 4, 5)), jnp.float32)
    for fn, kw in [
        (sx.softmax, {"axis": (0, 2)}),  # axes not adjacent
        (sx.softmax, {"axis": ()}),
        (sx.logsumexp, {"axis": 1, "b": jnp.ones(5)}),
    ]:
        with sx.force_generic():
            ref = fn(x, **kw)
        assert_close(fn(x, **kw), ref)
    assert not launches


def test_inputs_untouched(launches: list[Any]) -> None:
    x = _rows(129, 3)
    before = np.asarray(x).copy()
    out = sx.softmax(x)
    np.testing.assert_array_equal(np.asarray(x), before)
    assert out is not x
    assert launches


# ---------------------------------------------------------------------------
# Gradients: the custom_jvp rules against jax.grad of the generic core


def _grads(kind: str, x: Any, w: Any, t: Any, cot: Any) -> tuple[Any, Any]:
    def loss(x: Any, t: Any) -> Any:
        kw: dict[str, Any] = {"where": w}
        if kind == "logsumexp":
            out = sx.logsumexp(x, axis=-1, **kw)
        else:
            out = _fn(kind)(x, temperature=t, **kw)
            out = jnp.where(jnp.isfinite(out), out, 0.0)
        return jnp.sum(jnp.where(jnp.isfinite(out), out * cot, 0.0))

    return jax.grad(loss, argnums=(0, 1))(x, t)


# one block and chunked (softmin: see test_where)
@pytest.mark.parametrize(
    ("kind", "n"),
    [(k, n) for k in KINDS for n in (129, 9000) if n < 9000 or k != "softmin"],
)
def test_gradients(kind: str, n: int, launches: list[Any]) -> None:
    # no NaN row (its gradient is NaN on both paths); the plain row gets a +inf
    x = np.delete(_special(n), [0, 5], axis=0)
    x[4, 0] = np.inf
    x = jnp.asarray(x, jnp.float32)
    rng = np.random.default_rng(8)
    w = np.array(_mask(x.shape))
    w[2] = False  # nothing left
    w = jnp.asarray(w)
    t = jnp.asarray(rng.random((x.shape[0], 1)) + 0.5, jnp.float32)
    cot = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    if kind == "logsumexp":
        cot = cot[:, 0]
    with sx.force_generic():
        ref = _grads(kind, x, w, t, cot)
    out = _grads(kind, x, w, t, cot)
    assert launches
    assert_grad_close(out[0], ref[0])
    assert_grad_close(out[1], ref[1], terms=n)
    # masked entries and slices with nothing left: gradient 0
    gx = np.asarray(out[0])
    assert np.all(gx[~np.asarray(w)] == 0)
    assert np.all(np.isfinite(gx))


def test_second_derivative(launches: list[Any]) -> None:
    x = jnp.asarray([0.5, -1.0, 2.0, 0.0], jnp.float64)
    for kind in ("softmax", "log_softmax", "logsumexp"):

        def f(x: Any, kind: str = kind) -> Any:
            return jnp.sum(_fn(kind)(x, axis=-1) ** 2)

        with sx.force_generic():
            ref = jax.hessian(f)(x)
        assert_grad_close(jax.hessian(f)(x), ref)


# ---------------------------------------------------------------------------
# Lowering for CUDA on this CPU-only jaxlib


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_lowers_for_cuda(
    kind: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_jax, "_PALLAS", "gpu")
    fast_jax._READY.clear()
    try:
        for n in (129, 70_000):  # one pass, chunked
            x = jnp.zeros((4, n), dtype)
            w = jnp.ones((n,), bool)
            for kw in ({}, {"where": w}):
                fn = jax.jit(lambda x, kw=kw: _fn(kind)(x, axis=-1, **kw))
                text = fn.trace(x).lower(lowering_platforms=("cuda",)).as_text()
                assert "__gpu$xla.gpu.triton" in text
        # on this CPU the same function runs XLA's branch
        x = _rows(129, 3, jnp.dtype(dtype))
        with sx.force_generic():
            ref = _fn(kind)(x, axis=-1)
        assert_close(_fn(kind)(x, axis=-1), ref)
    finally:
        fast_jax._READY.clear()


# ---------------------------------------------------------------------------
# The lowered Triton IR compiled for sm_80 / sm_90 by the triton wheel: no spills


def _ptxas_report(
    ttir: str, num_warps: int, tmp_path: Any
) -> dict[int, tuple[int, int]]:
    """``{cc: (registers, spill bytes)}`` of a TTIR module, from ``ptxas -v``."""
    import re
    import subprocess

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    src = tmp_path / "kernel.ttir"
    src.write_text(ttir)
    report = {}
    for cc, arch in ((80, "sm_80"), (90, "sm_90a")):
        options = {"num_warps": num_warps, "num_stages": 1}
        kernel = triton.compile(
            str(src), target=GPUTarget("cuda", cc, 32), options=options
        )
        ptx = tmp_path / f"kernel_{cc}.ptx"
        ptx.write_text(kernel.asm["ptx"])
        log = subprocess.run(
            [ptxas, "-v", f"--gpu-name={arch}", str(ptx), "-o", os.devnull],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        regs = int(re.search(r"Used (\d+) registers", log).group(1))  # type: ignore[union-attr]
        spills = sum(int(v) for v in re.findall(r"(\d+) bytes spill", log))
        report[cc] = (regs, spills)
    return report


@pytest.mark.parametrize("chunked", [False, True], ids=["one-pass", "chunked"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_registers_no_spills(
    kind: str,
    dtype: str,
    chunked: bool,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """The largest tile of each kernel (with a mask and an array temperature)."""
    if os.environ.get("SOFTMAX_XP_GPU_LOGIC") != "1":
        pytest.importorskip("triton")
    from jax._src.pallas.triton import pallas_call_registration as registration

    lowered: list[str] = []
    real = registration.lowering.lower_jaxpr_to_triton_module

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        lowered.append(result.module.operation.get_asm(enable_debug_info=False))
        return result

    plans: list[Any] = []
    launch = jax_pallas.launch

    def spy_launch(plan: Any, *args: Any, **kwargs: Any) -> Any:
        plans.append(plan)
        return launch(plan, *args, **kwargs)

    monkeypatch.setattr(registration.lowering, "lower_jaxpr_to_triton_module", spy)
    monkeypatch.setattr(jax_pallas, "launch", spy_launch)
    monkeypatch.setattr(fast_jax, "_PALLAS", "gpu")
    fast_jax._READY.clear()
    n = 70_000 if chunked else (4096 if dtype == "float64" else 8192)
    x = jnp.zeros((4, n), dtype)
    w = jnp.ones((4, n), bool)
    t = jnp.ones((4, 1), dtype)
    try:
        if kind == "logsumexp":
            fn = jax.jit(lambda x, w, t: sx.logsumexp(x, axis=-1, where=w))
        else:
            fn = jax.jit(lambda x, w, t: _fn(kind)(x, where=w, temperature=t))
        fn.trace(x, w, t).lower(lowering_platforms=("cuda",))
    finally:
        fast_jax._READY.clear()
    assert plans[0].chunks > 1 if chunked else plans[0].chunks == 1
    report = _ptxas_report(lowered[0], plans[0].num_warps, tmp_path)
    print(kind, dtype, "chunked" if chunked else "one pass", plans[0], report)
    for regs, spills in report.values():
        assert spills == 0
        assert regs <= 255
