"""Gradients through torch autograd and JAX (docs/contract.md, "Gradients").

The contract: gradients are finite wherever the output is finite, exactly zero
for masked entries (even when they hold NaN or inf) and for slices with
nothing left, and no NaN is created internally, not even in a branch that a
mask discards later (checked with ``jax_debug_nans`` and torch's anomaly
mode, which raise on any NaN produced by any operation).

Expected gradients come from the analytic formulas, evaluated in NumPy on the
probabilities of the slice with masked and ``-inf`` entries deleted:
d softmax = diag(p) - p p^T, d log_softmax = I - 1 p^T, d logsumexp = p;
and from finite differences (``torch.autograd.gradcheck``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _helpers import jax_debug_nans
from conftest import needs

import softmax_xp as sx

NINF = -np.inf
INF = np.inf
NAN = np.nan
F64_EPS = float(np.finfo(np.float64).eps)

# One row per case of the contract; the reduced axis is the last one.
X = np.array(
    [
        [0.5, -1.2, 3.0, 2.0, -0.3],  # 0 finite
        [1.0, NINF, 2.0, NINF, 0.0],  # 1 some -inf
        [1.0, INF, 2.0, 0.0, NINF],  # 2 one +inf
        [INF, 0.0, INF, NINF, 1.0],  # 3 two +inf
        [NINF, NINF, NINF, NINF, NINF],  # 4 all -inf
        [NAN, 1.0, 2.0, NAN, NINF],  # 5 NaN only where masked
        [NAN, INF, NINF, 1.0, 2.0],  # 6 fully masked
        [INF, 1.0, NINF, 3.0, INF],  # 7 +inf only where masked
        [0.5, 4.0, -2.0, 1.0, 0.0],  # 8 a finite entry masked
    ]
)
MASK = np.array(
    [
        [True] * 5,
        [True] * 5,
        [True] * 5,
        [True] * 5,
        [True] * 5,
        [False, True, True, False, True],
        [False] * 5,
        [False, True, True, True, False],
        [True, False, True, True, True],
    ]
)
N_UNMASKED = 5  # rows 0..4 need no mask (no NaN in them)
T_COL = np.array([[0.5], [2.0], [1.0], [4.0], [1.5], [0.75], [3.0], [1.25], [2.5]])

NAMES = ("softmax", "log_softmax", "softmin", "logsumexp")


def _call(name: str, x: Any, *, where: Any = None, temperature: Any = None) -> Any:
    """The library function, reducing the last axis; logsumexp has no temperature."""
    if name == "logsumexp":
        assert temperature is None
        return sx.logsumexp(x, axis=-1, where=where)
    fn = {"softmax": sx.softmax, "log_softmax": sx.log_softmax, "softmin": sx.softmin}[
        name
    ]
    return fn(x, axis=-1, where=where, temperature=temperature)


# ---------------------------------------------------------------------------
# Analytic expectations (float64 NumPy)


def _z(name: str, x: np.ndarray, t: Any) -> np.ndarray:
    """What the softmax is taken of: x / t, negated for softmin."""
    z = -x if name == "softmin" else x.copy()
    if t is not None:
        with np.errstate(invalid="ignore"):
            z = z / np.asarray(t, dtype=np.float64)
    return z


def _kinds(z: np.ndarray, mask: np.ndarray) -> list[str]:
    """'finite', 'posinf' or 'empty' for each row (no row has an active NaN)."""
    kinds = []
    for zr, mr in zip(z, mask, strict=True):
        v = zr[mr]
        assert not np.isnan(v).any()
        if (v == INF).any():
            kinds.append("posinf")
        elif (v > NINF).any():
            kinds.append("finite")
        else:
            kinds.append("empty")
    return kinds


def _probs(z: np.ndarray, mask: np.ndarray, kinds: list[str]) -> np.ndarray:
    """Probabilities of the 'finite' rows (0 at masked and -inf entries)."""
    p = np.zeros_like(z)
    for i, kind in enumerate(kinds):
        if kind == "finite":
            act = mask[i] & (z[i] > NINF)
            e = np.exp(z[i][act] - z[i][act].max())
            p[i][act] = e / e.sum()
    return p


def _cotangent(name: str, x: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """Random cotangent; for log_softmax zero on the outputs that are -inf."""
    g = np.random.default_rng(seed).uniform(-2.0, 2.0, x.shape)
    if name == "log_softmax":
        z = _z(name, x, None)
        kinds = _kinds(z, mask)
        for i, kind in enumerate(kinds):
            finite_out = (
                mask[i] & (z[i] > NINF) if kind == "finite" else mask[i] & (z[i] == INF)
            )
            g[i][~finite_out] = 0.0
    elif name == "logsumexp":
        g = g[:, 0]
    return g


def expected_grads(
    name: str, x: np.ndarray, mask: np.ndarray, t: Any, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """d<g, f(x)>/dx and d<g, f(x)>/dt per row (rows of kind 'posinf': NaN = unspecified)."""
    z = _z(name, x, t)
    kinds = _kinds(z, mask)
    p = _probs(z, mask, kinds)
    if name in {"softmax", "softmin"}:
        gz = p * (g - np.sum(p * g, axis=-1, keepdims=True))
    elif name == "log_softmax":
        gz = g - p * np.sum(g, axis=-1, keepdims=True)
        gz[p == 0] = 0.0  # g is zero there too: -inf outputs and masked entries
    else:
        gz = g[:, None] * p
    t_arr = (
        np.ones((x.shape[0], 1))
        if t is None
        else np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0], 1))
    )
    sgn = -1.0 if name == "softmin" else 1.0
    gx = sgn * gz / t_arr
    # dz/dt = -z/t, only where z is finite (elsewhere gz is 0 and z constant in t)
    zf = np.where(gz != 0, z, 0.0)
    gt = np.sum(gz * (-zf / t_arr), axis=-1)
    for i, kind in enumerate(kinds):
        if kind == "posinf":
            gx[i] = NAN
            gt[i] = NAN
    return gx, gt, kinds


def _tol(expected: np.ndarray, eps: float) -> dict[str, float]:
    finite = expected[np.isfinite(expected)]
    size = max(1.0, float(np.max(np.abs(finite)))) if finite.size else 1.0
    return {"rtol": 32 * eps, "atol": 32 * eps * size}


def check_grads(
    name: str,
    gx: np.ndarray,
    want: np.ndarray,
    kinds: list[str],
    mask: np.ndarray,
    eps: float = F64_EPS,
) -> None:
    """``gx`` against the analytic gradient, with the contract's exact zeros."""
    assert gx.shape == want.shape
    assert np.isfinite(gx).all(), f"{name}: non-finite gradient\n{gx}"
    assert np.all(gx[~mask] == 0), f"{name}: masked entries get a gradient\n{gx}"
    for i, kind in enumerate(kinds):
        if kind == "empty":
            assert np.all(gx[i] == 0), f"{name}: row {i} has nothing left: {gx[i]}"
        if kind == "finite":
            zero = want[i] == 0
            assert np.all(gx[i][zero] == 0), f"{name}: row {i}: {gx[i]} vs {want[i]}"
            np.testing.assert_allclose(
                gx[i], want[i], **_tol(want[i], eps), err_msg=f"{name} row {i}"
            )


def test_expected_grads_match_finite_differences() -> None:
    """The NumPy formulas above, against central differences on finite rows."""
    h = 1e-6

    def f(name: str, xx: np.ndarray, tt: np.ndarray) -> np.ndarray:
        z = _z(name, xx, tt)
        out = np.zeros_like(z) if name != "logsumexp" else np.zeros(z.shape[0])
        for i in range(z.shape[0]):
            act = mask[i] & (z[i] > NINF)
            v = z[i][act]
            lse = v.max() + np.log(np.sum(np.exp(v - v.max())))
            if name == "logsumexp":
                out[i] = lse
            elif name == "log_softmax":
                out[i][act] = v - lse
            else:
                out[i][act] = np.exp(v - lse)
        return out

    for name in NAMES:
        rows = [0, 8] if name == "softmin" else [0, 1, 8]  # rows without +inf
        x, mask = X[rows], MASK[rows]
        tt = None if name == "logsumexp" else T_COL[rows]
        g = _cotangent(name, x, mask, 5)
        gx, gt, _ = expected_grads(name, x, mask, tt, g)
        num = np.zeros_like(x)
        for idx in zip(*np.nonzero(np.isfinite(x) & mask), strict=True):
            e = np.zeros_like(x)
            e[idx] = h
            with np.errstate(invalid="ignore"):
                num[idx] = np.sum(g * (f(name, x + e, tt) - f(name, x - e, tt))) / (
                    2 * h
                )
        np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-8)
        if tt is not None:
            for i in range(len(rows)):
                e = np.zeros_like(tt)
                e[i] = h
                diff = np.sum(
                    g[i] * (f(name, x, tt + e)[i] - f(name, x, tt - e)[i])
                ) / (2 * h)
                np.testing.assert_allclose(gt[i], diff, rtol=1e-6, atol=1e-8)


# ===========================================================================
# JAX


@pytest.fixture
def debug_nans() -> Any:
    """A context manager turning ``jax_debug_nans`` on.

    Inputs holding NaN (the masked entries) must be made before it is entered:
    with it on, even ``jnp.asarray`` of such an array raises.
    """
    import jax

    previous = jax.config.jax_debug_nans
    try:
        yield jax_debug_nans
    finally:
        jax.config.update("jax_debug_nans", previous)


def _jax_vjp(
    fn: Callable[..., Any], primals: tuple[Any, ...], g: Any
) -> tuple[Any, ...]:
    import jax

    _, vjp = jax.vjp(fn, *primals)
    return tuple(np.asarray(a) for a in vjp(g))


CASES = [("nomask", N_UNMASKED), ("mask", len(X))]
# jit: the masked case only (each jitted configuration is one compilation)
JAX_CASES = [(False, *c) for c in CASES] + [(True, *CASES[1])]


@needs("jax")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("jit", "variant", "rows"),
    JAX_CASES,
    ids=[f"{'jit' if c[0] else 'eager'}-{c[1]}" for c in JAX_CASES],
)
def test_jax_vjp_matches_analytic(
    name: str, variant: str, rows: int, jit: bool
) -> None:
    import jax
    import jax.numpy as jnp

    x_np, mask = X[:rows], MASK[:rows]
    where = jnp.asarray(mask) if variant == "mask" else None
    g = _cotangent(name, x_np, mask, 1)
    f = (
        jax.jit(lambda x, w: _call(name, x, where=w))
        if jit
        else (lambda x, w: _call(name, x, where=w))
    )
    (gx,) = _jax_vjp(lambda x: f(x, where), (jnp.asarray(x_np),), jnp.asarray(g))
    want, _, kinds = expected_grads(name, x_np, mask, None, g)
    check_grads(name, gx, want, kinds, mask)


@needs("jax")
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize(
    ("t_kind", "jit"),
    [("scalar", False), ("column", False), ("column", True)],
    ids=["scalar-eager", "column-eager", "column-jit"],
)
def test_jax_temperature_gradient(name: str, t_kind: str, jit: bool) -> None:
    import jax
    import jax.numpy as jnp

    g = _cotangent(name, X, MASK, 2)
    t_np = np.array(1.75) if t_kind == "scalar" else T_COL

    def f(x: Any, t: Any) -> Any:
        return _call(name, x, where=jnp.asarray(MASK), temperature=t)

    f = jax.jit(f) if jit else f
    gx, gt = _jax_vjp(f, (jnp.asarray(X), jnp.asarray(t_np)), jnp.asarray(g))
    want_x, want_t, kinds = expected_grads(name, X, MASK, t_np, g)
    check_grads(name, gx, want_x, kinds, MASK)
    assert gt.shape == t_np.shape
    assert np.isfinite(gt).all(), gt
    rows_ok = np.array([k != "posinf" for k in kinds])
    if t_kind == "scalar":
        if rows_ok.all():
            np.testing.assert_allclose(gt, np.sum(want_t), **_tol(want_t, F64_EPS))
    else:
        got = gt[:, 0][rows_ok]
        np.testing.assert_allclose(
            got, want_t[rows_ok], **_tol(want_t[rows_ok], F64_EPS)
        )
    # a scalar temperature over rows where its gradient is defined as a whole
    fin = [i for i, k in enumerate(kinds) if k != "posinf"]
    gt_fin = _jax_vjp(
        lambda t: _call(
            name, jnp.asarray(X[fin]), where=jnp.asarray(MASK[fin]), temperature=t
        ),
        (jnp.asarray(1.75),),
        jnp.asarray(g[fin]),
    )[0]
    _, want_fin, _ = expected_grads(name, X[fin], MASK[fin], 1.75, g[fin])
    np.testing.assert_allclose(gt_fin, np.sum(want_fin), **_tol(want_fin, F64_EPS))


@needs("jax")
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_jax_jacobian_formulas(name: str) -> None:
    """Full Jacobians of single rows: diag(p) - p p^T and I - 1 p^T."""
    import jax
    import jax.numpy as jnp

    z_all = _z(name, X, None)
    rows = [i for i, k in enumerate(_kinds(z_all, MASK)) if k == "finite"]
    assert len(rows) >= 2
    for i in rows:
        row, m = X[i], MASK[i]
        jac = np.asarray(
            jax.jacobian(lambda r, m=m: _call(name, r, where=jnp.asarray(m)))(
                jnp.asarray(row)
            )
        )
        z = _z(name, row[None], None)
        p = _probs(z, m[None], _kinds(z, m[None]))[0]
        if name == "log_softmax":
            want = np.eye(5) - np.outer(np.ones(5), p)
            finite_out = m & (row > NINF)
            jac, want = jac[finite_out], want[finite_out]  # rows of finite outputs only
        else:
            want = np.diag(p) - np.outer(p, p)
            if name == "softmin":
                want = -want
        assert np.isfinite(jac).all()
        assert np.all(jac[..., ~m] == 0)  # masked columns, exactly
        assert np.all(jac[..., p == 0] == want[..., p == 0])
        np.testing.assert_allclose(jac, want, rtol=32 * F64_EPS, atol=32 * F64_EPS)


@needs("jax")
def test_jax_grad_logsumexp_is_softmax() -> None:
    import jax
    import jax.numpy as jnp

    for i in (0, 1, 5, 8):
        row, m = X[i], MASK[i]
        grad = np.asarray(
            jax.grad(lambda r, m=m: sx.logsumexp(r, where=jnp.asarray(m)))(
                jnp.asarray(row)
            )
        )
        z = row[None]
        p = _probs(z, m[None], _kinds(z, m[None]))[0]
        assert np.all(grad[p == 0] == 0)  # -inf and masked entries, exactly
        np.testing.assert_allclose(grad, p, rtol=32 * F64_EPS, atol=32 * F64_EPS)
    # all -inf, fully masked, empty: zero gradient
    for row, m in ((X[4], MASK[4]), (X[6], MASK[6])):
        grad = np.asarray(
            jax.grad(lambda r, m=m: sx.logsumexp(r, where=jnp.asarray(m)))(
                jnp.asarray(row)
            )
        )
        assert np.all(grad == 0)
    grad = jax.grad(sx.logsumexp)(jnp.zeros((0,)))
    assert grad.shape == (0,)


@needs("jax")
def test_jax_grad_logsumexp_with_b() -> None:
    """d/dx = b e^(x - lse), d/db = e^(x - lse); masked and -inf entries get 0."""
    import jax
    import jax.numpy as jnp

    rows = [0, 1, 4, 5, 6, 8]
    x_np, mask = X[rows], MASK[rows]
    b_np = np.array([1.0, 2.0, 0.5, 3.0, 0.25])
    g = np.random.default_rng(3).uniform(-2, 2, len(rows))

    def f(x: Any, b: Any) -> Any:
        return sx.logsumexp(x, axis=-1, b=b, where=jnp.asarray(mask))

    for fn in (f, jax.jit(f)):
        gx, gb = _jax_vjp(fn, (jnp.asarray(x_np), jnp.asarray(b_np)), jnp.asarray(g))
        want_x = np.zeros_like(x_np)
        want_b = np.zeros(5)
        for i in range(len(rows)):
            act = mask[i] & (x_np[i] > NINF)
            if act.any():
                w = b_np[act] * np.exp(x_np[i][act] - x_np[i][act].max())
                want_x[i][act] = g[i] * w / w.sum()
                want_b[act] += g[i] * (w / b_np[act]) / w.sum()
        assert np.isfinite(gx).all()
        assert np.isfinite(gb).all()
        assert np.all(gx[want_x == 0] == 0)
        np.testing.assert_allclose(gx, want_x, rtol=32 * F64_EPS, atol=32 * F64_EPS)
        np.testing.assert_allclose(gb, want_b, rtol=32 * F64_EPS, atol=32 * F64_EPS)


# ===========================================================================
# torch


def _t(a: Any, **kw: Any) -> Any:
    import torch

    return torch.as_tensor(np.asarray(a), **kw)


@needs("torch")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("variant", "rows"), CASES, ids=[c[0] for c in CASES])
def test_torch_grad_matches_analytic(name: str, variant: str, rows: int) -> None:
    import torch

    x_np, mask = X[:rows], MASK[:rows]
    x = _t(x_np).requires_grad_(True)
    where = _t(mask) if variant == "mask" else None
    g = _cotangent(name, x_np, mask, 1)
    with torch.autograd.set_detect_anomaly(True):
        out = _call(name, x, where=where)
        (gx,) = torch.autograd.grad(out, x, grad_outputs=_t(g))
    want, _, kinds = expected_grads(name, x_np, mask, None, g)
    check_grads(name, gx.numpy(), want, kinds, mask)


@needs("torch")
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("t_kind", ["scalar", "column"])
def test_torch_temperature_gradient(name: str, t_kind: str) -> None:
    import torch

    g = _cotangent(name, X, MASK, 2)
    t_np = np.array(1.75) if t_kind == "scalar" else T_COL
    x = _t(X).requires_grad_(True)
    t = _t(t_np).requires_grad_(True)
    with torch.autograd.set_detect_anomaly(True):
        out = _call(name, x, where=_t(MASK), temperature=t)
        gx, gt = torch.autograd.grad(out, (x, t), grad_outputs=_t(g))
    want_x, want_t, kinds = expected_grads(name, X, MASK, t_np, g)
    check_grads(name, gx.numpy(), want_x, kinds, MASK)
    gt = gt.numpy()
    assert gt.shape == t_np.shape
    assert np.isfinite(gt).all(), gt
    if t_kind == "column":
        ok = np.array([k != "posinf" for k in kinds])
        np.testing.assert_allclose(
            gt[:, 0][ok], want_t[ok], **_tol(want_t[ok], F64_EPS)
        )
    # a scalar temperature over rows where its gradient is defined as a whole
    fin = [i for i, k in enumerate(kinds) if k != "posinf"]
    t0 = torch.tensor(1.75, dtype=torch.float64, requires_grad=True)
    out = _call(name, _t(X[fin]), where=_t(MASK[fin]), temperature=t0)
    (gt0,) = torch.autograd.grad(out, t0, grad_outputs=_t(g[fin]))
    _, want_fin, _ = expected_grads(name, X[fin], MASK[fin], 1.75, g[fin])
    np.testing.assert_allclose(gt0.numpy(), np.sum(want_fin), **_tol(want_fin, F64_EPS))


def _gradcheck_cases() -> dict[str, tuple[Callable[..., Any], tuple[np.ndarray, ...]]]:
    """Functions of float64 tensors for torch.autograd.gradcheck, and their inputs."""
    rng = np.random.default_rng(2024)
    x = rng.standard_normal((3, 5))
    xinf = x.copy()
    xinf[0, 1] = xinf[2, [0, 4]] = xinf[:, 2] = NINF  # every row keeps finite entries
    m = np.ones((3, 5), dtype=bool)
    m[1, [0, 3]] = False
    xnan = x.copy()
    xnan[1, [0, 3]] = NAN  # NaN only where masked
    b = rng.uniform(0.5, 2.0, 5)
    tcol = rng.uniform(0.5, 2.0, (3, 1))

    def finite(y: Any) -> Any:
        return y[_t(np.isfinite(xinf))]  # log_softmax: the finite outputs only

    def unmasked(y: Any) -> Any:
        return y[_t(m)]

    cases: dict[str, tuple[Callable[..., Any], tuple[np.ndarray, ...]]] = {}
    for name, fn in (
        ("softmax", sx.softmax),
        ("log_softmax", sx.log_softmax),
        ("softmin", sx.softmin),
    ):
        cases[name] = (fn, (x,))
        cases[f"{name}-axis0"] = (lambda a, fn=fn: fn(a, axis=0), (x,))
        cases[f"{name}-axisNone"] = (lambda a, fn=fn: fn(a, axis=None), (x,))
        cases[f"{name}-axis(1,0)"] = (lambda a, fn=fn: fn(a, axis=(1, 0)), (x,))
        cases[f"{name}-t"] = (lambda a, fn=fn: fn(a, temperature=0.7), (x,))
        cases[f"{name}-t0d"] = (
            lambda a, t, fn=fn: fn(a, temperature=t),
            (x, np.array(1.3)),
        )
        cases[f"{name}-tcol"] = (lambda a, t, fn=fn: fn(a, temperature=t), (x, tcol))
        # log_softmax: masked outputs are -inf, keep the finite ones only
        sel = unmasked if fn is sx.log_softmax else (lambda y: y)
        cases[f"{name}-where"] = (lambda a, fn=fn, s=sel: s(fn(a, where=_t(m))), (x,))
        cases[f"{name}-where-nan"] = (
            lambda a, fn=fn, s=sel: s(fn(a, where=_t(m))),
            (xnan,),
        )
        cases[f"{name}-where-nan-tcol"] = (
            lambda a, t, fn=fn, s=sel: s(fn(a, where=_t(m), temperature=t)),
            (xnan, tcol),
        )
    # rows with some -inf (softmin would turn them into +inf rows: left out)
    cases["softmax-neginf"] = (sx.softmax, (xinf,))
    cases["softmax-neginf-tcol"] = (
        lambda a, t: sx.softmax(a, temperature=t),
        (xinf, tcol),
    )
    cases["log_softmax-neginf"] = (lambda a: finite(sx.log_softmax(a)), (xinf,))
    cases["log_softmax-neginf-tcol"] = (
        lambda a, t: finite(sx.log_softmax(a, temperature=t)),
        (xinf, tcol),
    )
    cases["logsumexp"] = (sx.logsumexp, (x,))
    cases["logsumexp-axis-1"] = (lambda a: sx.logsumexp(a, axis=-1), (x,))
    cases["logsumexp-axis0-keepdims"] = (
        lambda a: sx.logsumexp(a, axis=0, keepdims=True),
        (x,),
    )
    cases["logsumexp-b"] = (lambda a, bb: sx.logsumexp(a, axis=-1, b=bb), (x, b))
    cases["logsumexp-b-where-nan"] = (
        lambda a, bb: sx.logsumexp(a, axis=-1, b=bb, where=_t(m)),
        (xnan, b),
    )
    cases["logsumexp-where"] = (lambda a: sx.logsumexp(a, axis=0, where=_t(m)), (x,))
    cases["logsumexp-neginf"] = (lambda a: sx.logsumexp(a, axis=-1), (xinf,))
    cases["logsumexp-neginf-axis0"] = (
        lambda a: sx.logsumexp(a[:, [0, 1, 3, 4]], axis=0),
        (xinf,),
    )
    cases["logsumexp-sign"] = (
        lambda a, bb: sx.logsumexp(a, axis=-1, b=bb, return_sign=True)[0],
        (x, b),
    )
    return cases


@needs("torch")
@pytest.mark.parametrize("cid", list(_gradcheck_cases()))
def test_torch_gradcheck(cid: str) -> None:
    import torch

    fn, args = _gradcheck_cases()[cid]
    inputs = tuple(_t(a).requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


def _debug_calls(
    conv: Callable[[Any], Any],
) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """Every public function with the options that take other code paths.

    Each entry: (id, dtype of the input ``X``, function of that input);
    ``conv`` makes a backend array of a NumPy one.
    """
    w = conv(MASK)
    t_col = conv(T_COL)
    b = conv(np.array([1.0, 2.0, 0.5, 3.0, 0.25]))
    u = N_UNMASKED
    calls: list[tuple[str, str, Callable[[Any], Any]]] = []
    for name, fn in (
        ("softmax", sx.softmax),
        ("log_softmax", sx.log_softmax),
        ("softmin", sx.softmin),
    ):
        calls += [
            (f"{name}", "float64", lambda x, fn=fn: fn(x[:u])),
            (f"{name}-axis0", "float64", lambda x, fn=fn: fn(x[:u], axis=0)),
            (f"{name}-axis()", "float64", lambda x, fn=fn: fn(x[:u], axis=())),
            (f"{name}-where", "float64", lambda x, fn=fn: fn(x, where=w)),
            (f"{name}-t", "float64", lambda x, fn=fn: fn(x[:u], temperature=2.5)),
            (
                f"{name}-where-tcol",
                "float64",
                lambda x, fn=fn: fn(x, where=w, temperature=t_col),
            ),
        ]
    calls += [
        ("softmax-axisNone", "float64", lambda x: sx.softmax(x[:u], axis=None)),
        ("softmax-where-axis0", "float64", lambda x: sx.softmax(x, axis=0, where=w)),
        ("softmax-f32", "float32", lambda x: sx.softmax(x[:u])),
        ("softmax-f16-where", "float16", lambda x: sx.softmax(x, where=w)),
        ("log_softmax-f16-where", "float16", lambda x: sx.log_softmax(x, where=w)),
        ("logsumexp", "float64", lambda x: sx.logsumexp(x[:u])),
        ("logsumexp-axis-1", "float64", lambda x: sx.logsumexp(x[:u], axis=-1)),
        ("logsumexp-axis()", "float64", lambda x: sx.logsumexp(x[:u], axis=())),
        ("logsumexp-where", "float64", lambda x: sx.logsumexp(x, axis=-1, where=w)),
        ("logsumexp-where-all", "float64", lambda x: sx.logsumexp(x, where=w)),
        (
            "logsumexp-b-where",
            "float64",
            lambda x: sx.logsumexp(x, axis=-1, b=b, where=w),
        ),
        (
            "logsumexp-b-where-sign",
            "float64",
            lambda x: sx.logsumexp(x, axis=-1, b=b, where=w, return_sign=True)[0],
        ),
        ("logsumexp-f32-where", "float32", lambda x: sx.logsumexp(x, axis=1, where=w)),
        ("logsumexp-f16", "float16", lambda x: sx.logsumexp(x[:u], axis=-1)),
    ]
    return calls


DEBUG_IDS = [cid for cid, _, _ in _debug_calls(lambda a: a)]
# JAX compiles every configuration (eager op by op, or whole under jit): a
# subset that still covers each function, mask, temperature, b, sign and half
JAX_DEBUG_IDS = [
    "softmax",
    "softmax-where",
    "softmax-where-tcol",
    "softmax-axis()",
    "softmax-f16-where",
    "log_softmax-where",
    "log_softmax-where-tcol",
    "log_softmax-f16-where",
    "softmin-where",
    "softmin-t",
    "logsumexp-axis-1",
    "logsumexp-where-all",
    "logsumexp-b-where",
    "logsumexp-b-where-sign",
    "logsumexp-f16",
]
assert set(JAX_DEBUG_IDS) <= set(DEBUG_IDS)


def _debug_call(conv: Callable[[Any], Any], cid: str) -> tuple[np.ndarray, Any]:
    """The NumPy input (in the case's dtype) and the function, for one id."""
    for c, dt, fn in _debug_calls(conv):
        if c == cid:
            return X.astype(dt), fn
    raise KeyError(cid)


def _check_debug_grad(cid: str, out: np.ndarray, gx: np.ndarray) -> None:
    """Finite gradient with the contract's zeros; the value holds no NaN."""
    assert not np.isnan(out).any(), f"{cid}: NaN in the value\n{out}"
    assert np.isfinite(gx).all(), f"{cid}: non-finite gradient\n{gx}"
    masked = "where" in cid
    rows = len(X) if masked else N_UNMASKED
    assert np.all(gx[:rows][~MASK[:rows]] == 0), f"{cid}: masked entries\n{gx}"
    assert np.all(gx[rows:] == 0), cid  # rows the call did not use
    reduces_rows = (
        not any(k in cid for k in ("axis0", "axisNone", "axis()", "-all"))
        and cid != "logsumexp"
    )
    if reduces_rows:
        assert np.all(gx[4] == 0), f"{cid}: all -inf row: {gx[4]}"
        if masked:
            assert np.all(gx[6] == 0), f"{cid}: fully masked row: {gx[6]}"


JAX_DEBUG_JIT_IDS = (
    "softmax-where-tcol",
    "log_softmax-where",
    "softmin-t",
    "softmax-f16-where",
    "logsumexp-b-where-sign",
    "logsumexp-where-all",
)
JAX_DEBUG_PARAMS = [(cid, False) for cid in JAX_DEBUG_IDS] + [
    (cid, True) for cid in JAX_DEBUG_JIT_IDS
]


@needs("jax")
@pytest.mark.parametrize(
    ("cid", "jit"),
    JAX_DEBUG_PARAMS,
    ids=[f"{c}-{'jit' if j else 'eager'}" for c, j in JAX_DEBUG_PARAMS],
)
def test_jax_no_nan_created_value_and_grad(
    cid: str, jit: bool, debug_nans: Any
) -> None:
    """Under jax_debug_nans any NaN produced by any operation raises."""
    import jax
    import jax.numpy as jnp

    x_np, f = _debug_call(jnp.asarray, cid)
    fn = jax.jit(f) if jit else f
    x = jnp.asarray(x_np)
    with debug_nans():
        assert jax.config.jax_debug_nans
        out, vjp = jax.vjp(fn, x)
        (gx,) = vjp(jnp.ones_like(out))
    _check_debug_grad(
        cid, np.asarray(out, dtype=np.float64), np.asarray(gx, dtype=np.float64)
    )


@needs("jax")
def test_jax_grad_of_finite_outputs_under_debug_nans(debug_nans: Any) -> None:
    """jax.grad of a scalar loss over the finite outputs, eager and jitted."""
    import jax
    import jax.numpy as jnp

    x, w = jnp.asarray(X), jnp.asarray(MASK)
    for fn in (sx.softmax, sx.log_softmax, sx.softmin, sx.logsumexp):

        def loss(x: Any, fn: Any = fn) -> Any:
            y = fn(x, axis=-1, where=w)
            return jnp.sum(jnp.where(jnp.isfinite(y), y, 0.0))

        for grad_fn in (jax.grad(loss), jax.jit(jax.grad(loss))):
            with debug_nans():
                g = np.asarray(grad_fn(x))
            assert np.isfinite(g).all(), g
            assert np.all(g[~MASK] == 0)
            assert np.all(g[[4, 6]] == 0)


@needs("jax")
def test_jax_no_nan_created_with_traced_temperature(debug_nans: Any) -> None:
    import jax
    import jax.numpy as jnp

    x, w = jnp.asarray(X), jnp.asarray(MASK)
    for fn in (sx.softmax, sx.log_softmax, sx.softmin):

        def f(x: Any, t: Any, fn: Any = fn) -> Any:
            return fn(x, where=w, temperature=t)

        for g, t in ((f, jnp.asarray(0.5)), (jax.jit(f), jnp.asarray(T_COL))):
            with debug_nans():
                out, vjp = jax.vjp(g, x, t)
                gx, gt = vjp(jnp.ones_like(out))
            assert np.isfinite(np.asarray(gx)).all()
            assert np.isfinite(np.asarray(gt)).all()
            assert np.all(np.asarray(gx)[~MASK] == 0)


@needs("torch")
@pytest.mark.parametrize("cid", DEBUG_IDS)
def test_torch_no_nan_in_backward(cid: str) -> None:
    """Anomaly mode raises when any backward function returns NaN."""
    import torch

    x_np, f = _debug_call(_t, cid)
    with torch.autograd.set_detect_anomaly(True):
        x = _t(x_np).requires_grad_(True)
        out = f(x)
        (gx,) = torch.autograd.grad(out, x, grad_outputs=torch.ones_like(out))
        _check_debug_grad(cid, out.detach().double().numpy(), gx.double().numpy())
        # the sum of the finite outputs, backward through .backward()
        x2 = _t(x_np).requires_grad_(True)
        y = f(x2)
        torch.where(torch.isfinite(y), y, 0.0).sum().backward()
        assert x2.grad is not None
        assert torch.isfinite(x2.grad).all(), x2.grad


@needs("torch")
def test_torch_no_nan_temperature_backward() -> None:
    import torch

    w = _t(MASK)
    for fn in (sx.softmax, sx.log_softmax, sx.softmin):
        for t_np in (np.array(0.5), T_COL, np.full(X.shape, 2.0)):
            x = _t(X).requires_grad_(True)
            t = _t(t_np).requires_grad_(True)
            with torch.autograd.set_detect_anomaly(True):
                out = fn(x, where=w, temperature=t)
                gx, gt = torch.autograd.grad(
                    out, (x, t), grad_outputs=torch.ones_like(out)
                )
            assert torch.isfinite(gx).all()
            assert torch.isfinite(gt).all()
            assert (gx[~w] == 0).all()


# ===========================================================================
# Masked outputs are constants (docs/contract.md, "Gradients"): whatever cotangent a masked entry's
# output receives, the gradient is that of the unmasked entries alone, with 0
# at the masked ones. The reference deletes the masked entries and asks the
# peer (torch.log_softmax / jax.nn) for the gradient of what is left.

MC_X = np.array(
    [
        [1.0, 5.0, 2.0, 0.0, -1.0],
        [0.3, -2.0, 4.0, 1.5, 0.7],
        [-1.0, 3.0, 3.0, 2.0, -4.0],
        [2.0, 0.5, -0.5, 6.0, 1.0],
    ]
)
MC_MASK = np.array(
    [
        [True, False, True, True, True],  # the masked entry is the largest
        [False, True, True, False, True],
        [True, True, False, True, False],
        [True, True, True, False, True],  # a finite entry masked, the max
    ]
)
# non-zero on every entry, masked ones included
MC_G = np.random.default_rng(7).uniform(0.5, 2.0, MC_X.shape) * np.where(
    MC_X > 0, 1.0, -1.0
)
MC_NAMES = ("softmax", "log_softmax", "softmin")
MC_PATHS = ("generic", "fast")


def _mc_call(name: str, x: Any, w: Any, t: float | None) -> Any:
    fn = {"softmax": sx.softmax, "log_softmax": sx.log_softmax, "softmin": sx.softmin}
    return fn[name](x, axis=-1, where=w, temperature=t)


def _mc_expected(name: str, t: float | None, peer: Callable[..., Any]) -> np.ndarray:
    """Row by row: the peer's gradient of <g, f(x)> over the unmasked entries."""
    want = np.zeros_like(MC_X)
    for i in range(MC_X.shape[0]):
        keep = MC_MASK[i]
        want[i][keep] = peer(name, MC_X[i][keep], MC_G[i][keep], t)
    return want


def _torch_peer(name: str, row: np.ndarray, g: np.ndarray, t: float | None) -> Any:
    import torch

    x = torch.tensor(row, requires_grad=True)
    z = x / (1.0 if t is None else t)
    z = -z if name == "softmin" else z
    out = torch.log_softmax(z, -1) if name == "log_softmax" else torch.softmax(z, -1)
    (gx,) = torch.autograd.grad(out, x, torch.tensor(g))
    return gx.numpy()


def _jax_peer(name: str, row: np.ndarray, g: np.ndarray, t: float | None) -> Any:
    import jax
    import jax.numpy as jnp

    def f(x: Any) -> Any:
        z = x / (1.0 if t is None else t)
        z = -z if name == "softmin" else z
        return jax.nn.log_softmax(z) if name == "log_softmax" else jax.nn.softmax(z)

    _, vjp = jax.vjp(f, jnp.asarray(row))
    return np.asarray(vjp(jnp.asarray(g))[0])


def _check_masked_cotangent(gx: np.ndarray, want: np.ndarray) -> None:
    assert np.all(gx[~MC_MASK] == 0), f"masked entries get a gradient:\n{gx}"
    np.testing.assert_allclose(gx, want, rtol=1e-13, atol=1e-14)


@needs("torch")
@pytest.mark.parametrize("path", MC_PATHS)
@pytest.mark.parametrize("name", MC_NAMES)
def test_torch_masked_cotangent_issue_example(name: str, path: str) -> None:
    """x=[1, 5, 2], where=[T, F, T], cotangent [0, 1, 0]: the gradient is 0.

    log_softmax on the generic core used to give [-0.269, 0, 0.269]: the masked
    output -inf - log1p(s) passed its cotangent on to the slice's sum.
    """
    import torch

    x = torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([True, False, True])
    with sx.force_generic(path == "generic"):
        out = _mc_call(name, x, w, None)
    (gx,) = torch.autograd.grad(out, x, torch.tensor([0.0, 1.0, 0.0]).double())
    assert np.all(gx.numpy() == 0), gx


@needs("torch")
@pytest.mark.parametrize("path", MC_PATHS)
@pytest.mark.parametrize("t", [None, 0.5], ids=["plain", "temperature"])
@pytest.mark.parametrize("name", MC_NAMES)
def test_torch_masked_cotangent(name: str, t: float | None, path: str) -> None:
    import torch

    x = _t(MC_X).requires_grad_(True)
    with sx.force_generic(path == "generic"):
        out = _mc_call(name, x, _t(MC_MASK), t)
    (gx,) = torch.autograd.grad(out, x, _t(MC_G))
    _check_masked_cotangent(gx.numpy(), _mc_expected(name, t, _torch_peer))


@needs("jax")
@pytest.mark.parametrize("path", MC_PATHS)
@pytest.mark.parametrize("name", MC_NAMES)
def test_jax_masked_cotangent_issue_example(name: str, path: str) -> None:
    import jax
    import jax.numpy as jnp

    w = jnp.asarray([True, False, True])
    with sx.force_generic(path == "generic"):
        _, vjp = jax.vjp(lambda a: _mc_call(name, a, w, None), jnp.asarray([1.0, 5, 2]))
        (gx,) = vjp(jnp.asarray([0.0, 1.0, 0.0]))
    assert np.all(np.asarray(gx) == 0), gx


@needs("jax")
@pytest.mark.parametrize("path", MC_PATHS)
@pytest.mark.parametrize(
    ("t", "jit"),
    [(None, False), (0.5, False), (None, True)],
    ids=["plain", "temperature", "plain-jit"],
)
@pytest.mark.parametrize("name", MC_NAMES)
def test_jax_masked_cotangent(name: str, t: float | None, jit: bool, path: str) -> None:
    import jax
    import jax.numpy as jnp

    w = jnp.asarray(MC_MASK)

    def f(a: Any) -> Any:
        return _mc_call(name, a, w, t)

    with sx.force_generic(path == "generic"):
        _, vjp = jax.vjp(jax.jit(f) if jit else f, jnp.asarray(MC_X))
        (gx,) = vjp(jnp.asarray(MC_G))
    _check_masked_cotangent(np.asarray(gx), _mc_expected(name, t, _jax_peer))


@needs("torch")
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_torch_masked_cotangent_from_state(log: bool) -> None:
    """The streaming normalisation: masked outputs send nothing to x or the state."""
    import torch

    x = _t(MC_X).requires_grad_(True)
    w = _t(MC_MASK)
    state = sx.logsumexp_state(x, -1, where=w, keepdims=True)
    fn = sx.log_softmax_from_state if log else sx.softmax_from_state
    out = fn(x, state, where=w)
    (gx,) = torch.autograd.grad(out, x, _t(MC_G))
    name = "log_softmax" if log else "softmax"
    _check_masked_cotangent(gx.numpy(), _mc_expected(name, None, _torch_peer))


# Tied maxima with different weights: the gradient of log(sum b e^x) is
# b_i e^x_i / sum(b e^x) for each entry; autodiff splits a max's gradient evenly
# between ties, so a core that reached tied maxima only through m gave 1/2 each.
TIED = (np.array([0.0, 0.0, -1.0, 0.0]), np.array([0.5, 1.0, -2.0, 3.0]))


def _tied_expected() -> np.ndarray:
    x, b = TIED
    w = b * np.exp(x)
    return w / w.sum()


@needs("torch")
@pytest.mark.parametrize("generic", [False, True])
def test_torch_logsumexp_tied_maxima_with_weights(generic: bool) -> None:
    import torch

    x = torch.tensor(TIED[0], requires_grad=True)
    with sx.force_generic(generic):
        sx.logsumexp(x, b=torch.tensor(TIED[1])).backward()
    np.testing.assert_allclose(x.grad.numpy(), _tied_expected(), rtol=1e-14)


@needs("jax")
@pytest.mark.parametrize("generic", [False, True])
def test_jax_logsumexp_tied_maxima_with_weights(generic: bool) -> None:
    import jax
    import jax.numpy as jnp

    with sx.force_generic(generic):
        g = jax.grad(lambda v: sx.logsumexp(v, b=jnp.asarray(TIED[1])))(
            jnp.asarray(TIED[0])
        )
    np.testing.assert_allclose(np.asarray(g), _tied_expected(), rtol=1e-14)
