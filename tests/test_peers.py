"""Agreement with the peers on finite input (docs/contract.md, "Beside SciPy, torch and JAX").

The peers are ``scipy.special`` (float64, every backend), ``torch.nn.functional``
and ``torch.logsumexp`` (torch backend) and ``jax.nn`` (jax backend). Inputs
are finite, where the peers are correct; each peer sees exactly the values
softmax-xp sees: the input rounded to the dtype under test, ``x / t`` formed
in the compute dtype for a temperature ``t``, masked entries deleted (SciPy)
or passed as ``where`` (JAX). Half-precision peers run on the float32 input
and are rounded once, as the contract computes half precision.

Tolerances come from the dtype (``eps = 2**(1-p)``): ``rtol = 8 eps`` (2 eps
in half precision, where both sides are within an ulp of the exact value) and
``atol`` the smallest normal of the compute dtype (flush-to-zero backends) or
the dtype's subnormal spacing. Softmax-like outputs add
``rtol = eps_c * 2 max|x|``: the contract computes ``x - max`` in the compute
dtype (eps_c), while a float64 peer on float32 data does not round it.
Log-domain outputs add ``atol = 4 eps (1 + log n + max|x|)``, the rounding a
peer's ``x - m - log(sum)`` or ``m + log(sum)`` may carry.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

sp = pytest.importorskip("scipy.special")

from conftest import needs

import softmax_xp as sx

DTYPES = ("float16", "bfloat16", "float32", "float64")
HALF = ("float16", "bfloat16")
# significand bits (the implicit one included) and the smallest normal exponent
FORMATS = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}
SHAPE = (3, 4, 5)
AXES = (-1, 0, (0, 2), None)
JAX_AXES = (-1, (0, 2))  # JAX compiles per axis and shape: fewer there


def _axes(be: Any) -> tuple[Any, ...]:
    return JAX_AXES if be.jax else AXES


LOG_KINDS = ("log_softmax", "logsumexp")


def _round(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype``, as float64 (exact)."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return a.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    return a.astype(dtype).astype(np.float64)


def _compute(dtype: str) -> str:
    return "float32" if dtype in HALF else dtype


def _data(seed: int, shape: tuple[int, ...], dtype: str, scale: float = 3.0) -> Any:
    rng = np.random.default_rng(seed)
    return _round(rng.normal(0.0, scale, shape), dtype)


def _n(shape: tuple[int, ...], axis: Any) -> int:
    if axis is None:
        return math.prod(shape)
    axes = axis if isinstance(axis, tuple) else (axis,)
    return math.prod(shape[a] for a in axes)


def _assert_close(
    got: np.ndarray, want: np.ndarray, kind: str, dtype: str, n: int, xmax: float
) -> None:
    """``got`` within the dtype-derived tolerance of the module docstring.

    ``xmax`` bounds the magnitude of the values the peer sees.
    """
    p, emin = FORMATS[dtype]
    eps = 2.0 ** (1 - p)
    rtol = 2 * eps if dtype in HALF else 8 * eps
    if kind not in LOG_KINDS:
        # rounding x - m in the compute dtype (|x - m| <= 2 xmax) costs
        # eps/2 |x - m| relative, through exp and through the sum
        rtol += 2.0 ** (1 - FORMATS[_compute(dtype)][0]) * 2 * xmax
    atol = max(2.0 ** FORMATS[_compute(dtype)][1], 2.0 ** (emin - p + 1))
    if kind in LOG_KINDS:
        atol += 4 * eps * (1 + math.log(max(n, 1)) + xmax)
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _ours(kind: str, x: Any, **kw: Any) -> Any:
    return getattr(sx, kind)(x, **kw)


def _skip_missing(be: Any, dtype: str) -> None:
    if dtype not in be.float_dtypes:
        pytest.skip(f"{be.name} has no {dtype}")


def _in_compute(x64: np.ndarray, dtype: str) -> np.ndarray:
    """The values as the compute dtype holds them (half inputs are exact in it)."""
    return x64.astype(_compute(dtype))


# --------------------------------------------------------------------------
# scipy.special, on every backend
# --------------------------------------------------------------------------


def _scipy(kind: str, x64: np.ndarray, axis: Any) -> np.ndarray:
    if kind == "softmax":
        return sp.softmax(x64, axis=axis)
    if kind == "softmin":
        return sp.softmax(-x64, axis=axis)
    if kind == "log_softmax":
        return sp.log_softmax(x64, axis=axis)
    return np.asarray(sp.logsumexp(x64, axis=axis))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_scipy_axes(be: Any, kind: str, dtype: str) -> None:
    x64 = _data(0, SHAPE, dtype)
    x = be.asarray(x64, dtype=dtype)
    for axis in _axes(be):
        got = be.to_numpy(_ours(kind, x, axis=axis))
        want = _scipy(kind, x64, axis)
        n = _n(SHAPE, axis)
        _assert_close(got, want, kind, dtype, n, float(np.abs(x64).max()))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_scipy_half(be: Any, kind: str, dtype: str) -> None:
    _skip_missing(be, dtype)
    x64 = _data(1, (6, 40), dtype, scale=5.0)
    x = be.asarray(x64, dtype=dtype)
    got = be.to_numpy(_ours(kind, x, axis=-1))
    # the exact result rounded once to the half dtype, as the contract computes
    want = _round(np.asarray(_scipy(kind, x64, -1)), dtype)
    _assert_close(got, want, kind, dtype, 40, float(np.abs(x64).max()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin"])
def test_scipy_temperature(be: Any, kind: str, dtype: str) -> None:
    x64 = _data(2, SHAPE, dtype)
    x = be.asarray(x64, dtype=dtype)
    t_arr64 = np.array([0.5, 1.0, 2.0, 4.0]).reshape(1, 4, 1)
    for t, t_np in (
        (0.5, 0.5),
        (3.0, 3.0),
        (be.asarray(t_arr64, dtype=dtype), t_arr64),
        ([[[0.25]], [[1.0]], [[8.0]]], np.array([0.25, 1.0, 8.0]).reshape(3, 1, 1)),
    ):
        # x / t formed in the compute dtype, then handed to the peer
        xt = (_in_compute(x64, dtype) / _in_compute(np.asarray(t_np), dtype)).astype(
            np.float64
        )
        for axis in (-1,) if be.jax else (-1, 1):
            got = be.to_numpy(_ours(kind, x, axis=axis, temperature=t))
            want = _scipy(kind, xt, axis)
            _assert_close(got, want, kind, dtype, SHAPE[axis], float(np.abs(xt).max()))


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_scipy_where_is_deletion(be: Any, kind: str) -> None:
    dtype = "float64"
    rng = np.random.default_rng(3)
    shape = (5, 8)
    x64 = _data(3, shape, dtype)
    keep = rng.random(shape) < 0.6
    keep[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = True
    garbage = np.where(keep, x64, np.nan)  # masked entries must be ignored
    xmax = float(np.abs(x64).max())
    for axis in (-1, 0):
        k = keep if axis == -1 else keep.T
        x = be.asarray(garbage if axis == -1 else garbage.T.copy(), dtype=dtype)
        got = be.to_numpy(_ours(kind, x, axis=axis, where=be.asarray(k)))
        if axis == 0:
            got = got.T
        for i in range(shape[0]):
            row, kept = x64[i], keep[i]
            want = _scipy(kind, row[kept], -1)
            if kind == "logsumexp":
                _assert_close(got[i], want, kind, dtype, int(kept.sum()), xmax)
                continue
            _assert_close(got[i][kept], want, kind, dtype, int(kept.sum()), xmax)
            masked = got[i][~kept]
            assert (masked == (-np.inf if kind == "log_softmax" else 0.0)).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_scipy_logsumexp_b_and_sign(be: Any, dtype: str) -> None:
    rng = np.random.default_rng(9)
    x64 = _data(9, SHAPE, dtype)
    b64 = _round(rng.choice([-1.0, 0.5, 2.0, 3.0], SHAPE), dtype)
    x = be.asarray(x64, dtype=dtype)
    b = be.asarray(b64, dtype=dtype)
    for axis in _axes(be):
        lse, sign = sx.logsumexp(x, axis=axis, b=b, return_sign=True)
        want, want_sign = sp.logsumexp(x64, axis=axis, b=b64, return_sign=True)
        # cancellation between weights of both signs: the condition number of
        # the sum scales the tolerance
        m = x64.max(axis=axis, keepdims=True)
        e = np.exp(x64 - m)
        cond = np.abs(b64 * e).sum(axis=axis) / np.abs((b64 * e).sum(axis=axis))
        got = be.to_numpy(lse)
        np.testing.assert_array_equal(be.to_numpy(sign), want_sign)
        for g, w, c in zip(np.ravel(got), np.ravel(want), np.ravel(cond), strict=True):
            _assert_close(
                np.asarray(g),
                np.asarray(w),
                "logsumexp",
                dtype,
                _n(SHAPE, axis),
                float(np.abs(x64).max()) * float(c),
            )
        positive = be.asarray(np.abs(b64), dtype=dtype)
        got = be.to_numpy(sx.logsumexp(x, axis=axis, b=positive))
        want = sp.logsumexp(x64, axis=axis, b=np.abs(b64))
        _assert_close(
            got, want, "logsumexp", dtype, _n(SHAPE, axis), float(np.abs(x64).max())
        )


# --------------------------------------------------------------------------
# torch.nn.functional / torch.logsumexp, on the torch backend
# --------------------------------------------------------------------------


def _torch_peer(kind: str, t: Any, dim: int) -> Any:
    import torch
    import torch.nn.functional as F

    if kind == "softmax":
        return F.softmax(t, dim=dim)
    if kind == "softmin":
        return F.softmin(t, dim=dim)
    if kind == "log_softmax":
        return F.log_softmax(t, dim=dim)
    return torch.logsumexp(t, dim=dim)


@needs("torch")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_torch(be: Any, kind: str, dtype: str) -> None:
    if not be.name.startswith("torch"):
        pytest.skip("torch peer: torch backend only")
    import torch

    x64 = _data(4, SHAPE, dtype)
    x = be.asarray(x64, dtype=dtype)
    xc = x.to(torch.float32) if dtype in HALF else x
    for dim in (0, 1, -1):
        want = _torch_peer(kind, xc, dim).to(x.dtype)
        got = _ours(kind, x, axis=dim)
        assert got.dtype == x.dtype
        assert got.device == x.device
        n = SHAPE[dim]
        _assert_close(
            be.to_numpy(got),
            be.to_numpy(want),
            kind,
            dtype,
            n,
            float(np.abs(x64).max()),
        )
    # temperature: the peer on x / t, formed in the compute dtype
    if kind == "logsumexp":
        return  # logsumexp has no temperature
    for t in (0.5, 3.0):
        want = _torch_peer(kind, xc / t, -1).to(x.dtype)
        got = _ours(kind, x, axis=-1, temperature=t)
        xmax = float(np.abs(x64).max()) / t
        _assert_close(be.to_numpy(got), be.to_numpy(want), kind, dtype, SHAPE[-1], xmax)


@needs("torch")
def test_torch_logsumexp_tuple_dim(be: Any) -> None:
    if not be.name.startswith("torch"):
        pytest.skip("torch peer: torch backend only")
    import torch

    x64 = _data(5, SHAPE, "float64")
    x = be.asarray(x64, dtype="float64")
    for dims in ((0, 2), (0, 1, 2)):
        want = torch.logsumexp(x, dim=dims)
        got = sx.logsumexp(x, axis=dims)
        _assert_close(
            be.to_numpy(got),
            be.to_numpy(want),
            "logsumexp",
            "float64",
            _n(SHAPE, dims),
            float(np.abs(x64).max()),
        )


# --------------------------------------------------------------------------
# jax.nn, on the jax backend
# --------------------------------------------------------------------------


def _jax_peer(kind: str, a: Any, axis: Any, where: Any = None) -> Any:
    import jax

    kw = {} if where is None else {"where": where}
    if kind == "softmax":
        return jax.nn.softmax(a, axis=axis, **kw)
    if kind == "softmin":
        return jax.nn.softmax(-a, axis=axis, **kw)
    if kind == "log_softmax":
        return jax.nn.log_softmax(a, axis=axis, **kw)
    return jax.nn.logsumexp(a, axis=axis, **kw)


def _skip_unless_jax(be: Any) -> None:
    if not be.jax:
        pytest.skip("jax peer: jax backend only")


@needs("jax")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_jax(be: Any, kind: str, dtype: str) -> None:
    _skip_unless_jax(be)
    import jax.numpy as jnp

    x64 = _data(6, SHAPE, dtype)
    x = be.asarray(x64, dtype=dtype)
    xc = x.astype(jnp.float32) if dtype in HALF else x
    axes = JAX_AXES if dtype in ("float32", "float64") else (-1,)
    for axis in axes:
        want = _jax_peer(kind, xc, axis).astype(x.dtype)
        got = _ours(kind, x, axis=axis)
        assert got.dtype == x.dtype
        _assert_close(
            be.to_numpy(got),
            be.to_numpy(want),
            kind,
            dtype,
            _n(SHAPE, axis),
            float(np.abs(x64).max()),
        )


@needs("jax")
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin", "logsumexp"])
def test_jax_where_and_temperature(be: Any, kind: str) -> None:
    _skip_unless_jax(be)
    dtype = "float64"
    rng = np.random.default_rng(7)
    x64 = _data(7, SHAPE, dtype)
    keep = rng.random(SHAPE) < 0.6
    x = be.asarray(x64, dtype=dtype)
    for axis in JAX_AXES:
        # only slices that keep at least one entry
        k = keep.copy()
        axes = axis if isinstance(axis, tuple) else (axis,)
        ok = k.any(axis=axes, keepdims=True)
        k = k | ~np.broadcast_to(ok, SHAPE)
        w = be.asarray(k)
        want = _jax_peer(kind, x, axis, where=w)
        got = _ours(kind, x, axis=axis, where=w)
        n = _n(SHAPE, axis)
        xmax = float(np.abs(x64).max())
        _assert_close(be.to_numpy(got), be.to_numpy(want), kind, dtype, n, xmax)
        if kind == "logsumexp":
            continue
        t = 0.25
        want = _jax_peer(kind, x / t, axis, where=w)
        got = _ours(kind, x, axis=axis, where=w, temperature=t)
        xmax = float(np.abs(x64).max()) / t
        _assert_close(be.to_numpy(got), be.to_numpy(want), kind, dtype, n, xmax)


@needs("jax")
def test_jax_scipy_logsumexp_with_b(be: Any) -> None:
    _skip_unless_jax(be)
    import jax.scipy.special as jss

    x64 = _data(8, SHAPE, "float64")
    b64 = np.random.default_rng(8).uniform(0.1, 2.0, SHAPE)
    x = be.asarray(x64, dtype="float64")
    b = be.asarray(b64, dtype="float64")
    for axis in (-1, None):
        want = jss.logsumexp(x, axis=axis, b=b)
        got = sx.logsumexp(x, axis=axis, b=b)
        _assert_close(
            be.to_numpy(got),
            be.to_numpy(want),
            "logsumexp",
            "float64",
            _n(SHAPE, axis),
            float(np.abs(x64).max()) + 1,
        )
