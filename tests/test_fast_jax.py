"""The JAX fast path (``_fast/jax.py``) against the generic core it optimises.

The fast path rewrites the contract's special-value handling as arithmetic and
brings its own ``custom_jvp`` rules; both must give the generic core's answer
(run through :func:`softmax_xp.force_generic`, which on JAX compiles the
generic core and differentiates it with JAX's own autodiff). Forward results
are compared on every row kind of the contract table, in every dtype, with
masks, temperatures and several axes; derivatives through ``vjp``, ``jacfwd``,
``jacrev`` and ``hessian``, under ``jit`` and ``vmap``, with ``jax_debug_nans``
on. Where generic and fast calls are traced by ``jax.jit``, each gets its own
function object: JAX caches a trace per function, and the switch is not part
of its key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _helpers import (
    FUNCS,
    KINDS,
    fast_paths_on,  # noqa: F401 - autouse: the fast path even when forced off
    jax_debug_nans,
)
from _helpers import generic as _generic
from conftest import needs

import softmax_xp as sx

pytestmark = needs("jax")

NINF, INF, NAN = -np.inf, np.inf, np.nan


def _finfo(dtype_name: str) -> Any:
    import jax.numpy as jnp

    return jnp.finfo(jnp.dtype(dtype_name))


def _rows(dtype_name: str) -> np.ndarray:
    """One row per case the fast path handles differently from the textbook formula."""
    fi = _finfo(dtype_name)
    big, eps = float(fi.max), float(fi.eps)
    return np.array(
        [
            [0.5, -1.2, 3.0, 2.0, -0.3, 1.1, -4.0],  # finite
            [1.0, NINF, 2.0, NINF, 0.0, 3.0, NINF],  # some -inf
            [1.0, INF, big, 0.0, NINF, 2.0, -big],  # one +inf beside max_float
            [INF, 0.0, INF, NINF, big, 1.0, 2.0],  # two +inf
            [NINF] * 7,  # nothing left
            [NAN, 1.0, 2.0, NINF, INF, 0.0, 1.0],  # NaN (unmasked in the plain case)
            [2.0, 2.0, 2.0, -1.0, 0.0, 2.0, NINF],  # tied maxima
            [
                1.0,
                1.0 - eps / 2,
                1.0 - eps,
                1.0 - 2 * eps,
                0.0,
                NINF,
                1.0,
            ],  # ties in exp
            [-big, NINF, NINF, NINF, NINF, NINF, NINF],  # the max is -max_float
            [big, -big, 0.0, 1.0, 2.0, -1.0, 3.0],  # x - m overflows to -inf
            [0.0, -40.0 if big > 1e5 else -9.0, NINF, NINF, NINF, NINF, NINF],
            [NINF, NINF, 5.0, NINF, NINF, NINF, NINF],  # one finite entry
        ]
    )


def _mask(n_rows: int) -> np.ndarray:
    m = np.random.default_rng(7).random((n_rows, 7)) < 0.7
    m[1, :] = False  # fully masked
    m[5, 0] = False  # the NaN row's NaN is masked: the row is live
    m[3, 0] = m[3, 2] = False  # the +inf entries masked: a finite row
    m[0, :] = True
    return m


def _eps(dtype: Any) -> float:
    import jax.numpy as jnp

    return float(jnp.finfo(dtype).eps)


def assert_same(fast: Any, generic: Any, dtype: Any, *, ulps: float = 4.0) -> None:
    """Same dtype and shape, the same special values, finite values within ``ulps`` eps."""
    assert fast.dtype == generic.dtype
    assert fast.shape == generic.shape
    a = np.asarray(fast, dtype=np.float64)
    b = np.asarray(generic, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))
    np.testing.assert_array_equal(a == 0, b == 0)
    eps = _eps(dtype)
    np.testing.assert_allclose(a, b, rtol=ulps * eps, atol=ulps * eps)


def _jaxpr(fn: Callable[..., Any], *args: Any) -> str:
    import jax

    return str(jax.make_jaxpr(fn)(*args))


# ===========================================================================
# Which path runs


def test_fast_path_has_custom_rules_and_generic_has_none() -> None:
    import jax.numpy as jnp

    x = jnp.asarray(_rows("float64"))
    for name, fn in FUNCS.items():
        assert "custom_jvp_call" in _jaxpr(lambda v, fn=fn: fn(v), x), name
        assert "custom_jvp_call" not in _jaxpr(lambda v, fn=fn: _generic(fn, v), x), (
            name
        )
    assert "custom_jvp_call" in _jaxpr(lambda v: sx.logsumexp(v, axis=1), x)
    assert "custom_jvp_call" not in _jaxpr(
        lambda v: _generic(sx.logsumexp, v, axis=1), x
    )
    # weights: the compiled generic core, not the eager one
    b = jnp.linspace(0.5, 2.0, 7)
    jaxpr = _jaxpr(lambda v: sx.logsumexp(v, axis=1, b=b), x)
    assert "custom_jvp_call" not in jaxpr
    assert "pjit" in jaxpr or "jit" in jaxpr


# ===========================================================================
# Forward: the generic answer


VARIANTS = ["plain", "where", "t-float", "t-array", "where+t-array"]


def _options(variant: str, n_rows: int) -> dict[str, Any]:
    import jax.numpy as jnp

    opts: dict[str, Any] = {}
    if "where" in variant:
        opts["where"] = jnp.asarray(_mask(n_rows))
    if variant == "t-float":
        opts["temperature"] = 0.7
    if "t-array" in variant:
        opts["temperature"] = jnp.asarray(np.linspace(0.5, 2.5, n_rows)[:, None])
    return opts


# every variant in float64; fewer in the other dtypes (each is two compilations)
DTYPE_VARIANTS = [
    *(("float64", v) for v in VARIANTS),
    *(("float32", v) for v in ("plain", "where", "t-array")),
    *((d, v) for d in ("float16", "bfloat16") for v in ("plain", "where+t-array")),
]


@pytest.mark.parametrize(("dtype_name", "variant"), DTYPE_VARIANTS)
@pytest.mark.parametrize("name", list(FUNCS))
def test_softmax_family_equals_generic(
    name: str, variant: str, dtype_name: str
) -> None:
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    rows = _rows(dtype_name)
    x = jnp.asarray(rows, dtype=dtype)
    opts = _options(variant, len(rows))
    fn = FUNCS[name]
    assert_same(fn(x, **opts), _generic(fn, x, **opts), dtype)


AXES = [-1, 0, 1, (0, 2), (1, 2), None, ()]


def _cube(dtype_name: str) -> np.ndarray:
    rows = _rows(dtype_name)
    return np.stack([rows, rows[::-1], np.roll(rows, 3, axis=1)])  # (3, 12, 7)


@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", KINDS)
def test_axes_equal_generic(name: str, axis: Any) -> None:
    import jax.numpy as jnp

    x = jnp.asarray(_cube("float32"), dtype=jnp.float32)
    w = jnp.asarray(np.random.default_rng(3).random(x.shape) < 0.8)
    fn = FUNCS.get(name, sx.logsumexp)
    for opts in ({}, {"where": w}):
        assert_same(
            fn(x, axis=axis, **opts), _generic(fn, x, axis=axis, **opts), jnp.float32
        )


LSE_CASES = [
    *(
        ("float64", axis, keepdims)
        for axis in (-1, 0, None)
        for keepdims in (False, True)
    ),
    *(("float32", axis, False) for axis in (-1, None)),
    ("float16", -1, False),
    ("bfloat16", -1, True),
]


@pytest.mark.parametrize(("dtype_name", "axis", "keepdims"), LSE_CASES, ids=str)
def test_logsumexp_equals_generic(dtype_name: str, axis: Any, keepdims: bool) -> None:
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    rows = _rows(dtype_name)
    x = jnp.asarray(rows, dtype=dtype)
    w = jnp.asarray(_mask(len(rows)))
    for opts in ({}, {"where": w}):
        got = sx.logsumexp(x, axis=axis, keepdims=keepdims, **opts)
        want = _generic(sx.logsumexp, x, axis=axis, keepdims=keepdims, **opts)
        assert_same(got, want, dtype)
        lse, sign = sx.logsumexp(
            x, axis=axis, keepdims=keepdims, return_sign=True, **opts
        )
        glse, gsign = _generic(
            sx.logsumexp, x, axis=axis, keepdims=keepdims, return_sign=True, **opts
        )
        assert_same(lse, glse, dtype)
        assert_same(sign, gsign, dtype, ulps=0)


def test_special_rows_by_hand() -> None:
    """The cases the arithmetic formulation must get right, with values worked out by hand."""
    import jax.numpy as jnp

    for dtype in (jnp.float32, jnp.float64):
        big = float(jnp.finfo(dtype).max)
        x = jnp.asarray([[1.0, INF, big, NINF], [big, -big, 0.0, NINF]], dtype=dtype)
        np.testing.assert_array_equal(
            np.asarray(sx.softmax(x)), [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
        )
        np.testing.assert_array_equal(
            np.asarray(sx.log_softmax(x)),
            [[NINF, 0.0, NINF, NINF], [0.0, NINF, -big, NINF]],
        )
        np.testing.assert_array_equal(np.asarray(sx.logsumexp(x, axis=1)), [INF, big])
        # all -inf, and a row whose maximum is -max_float
        y = jnp.asarray([[NINF, NINF], [-big, NINF]], dtype=dtype)
        np.testing.assert_array_equal(np.asarray(sx.softmax(y)), [[0, 0], [1, 0]])
        np.testing.assert_array_equal(np.asarray(sx.logsumexp(y, axis=1)), [NINF, -big])
    # the log1p form: the small term survives
    lse = sx.logsumexp(jnp.asarray([0.0, -40.0]))
    np.testing.assert_allclose(float(lse), 4.248354255291589e-18, rtol=1e-15)
    lse32 = sx.logsumexp(jnp.asarray([0.0, -40.0], dtype=jnp.float32))
    np.testing.assert_allclose(float(lse32), 4.248354255291589e-18, rtol=1e-6)
    ls = sx.log_softmax(jnp.asarray([0.0, -40.0]))
    np.testing.assert_allclose(float(ls[0]), -4.248354255291589e-18, rtol=1e-15)


def test_integer_input_and_dtype_option() -> None:
    import jax.numpy as jnp

    xi = jnp.asarray([[1, 2, 3], [-4, 0, 4]])
    xf = jnp.asarray(_rows("float64"))
    for name, fn in FUNCS.items():
        assert_same(fn(xi), _generic(fn, xi), jnp.float64)
        for dt in (jnp.float16, jnp.float32):
            got = fn(xf, dtype=dt)
            assert got.dtype == jnp.dtype(dt), name
            assert_same(got, _generic(fn, xf, dtype=dt), dt)
    assert_same(sx.logsumexp(xi), _generic(sx.logsumexp, xi), jnp.float64)


# ===========================================================================
# Derivatives: the generic autodiff's, with the contract's zeros

# rows whose outputs are all finite or -inf (no NaN): the derivative is defined
LIVE = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]


def _vjp(fn: Callable[..., Any], primals: tuple[Any, ...], g: Any) -> list[Any]:
    import jax

    _, pull = jax.vjp(fn, *primals)
    return [np.asarray(a) for a in pull(g)]


def _cotangent(shape: tuple[int, ...], seed: int) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(np.random.default_rng(seed).uniform(-2.0, 2.0, shape))


def _grad_case(
    name: str, variant: str
) -> tuple[Callable[..., Any], tuple[Any, ...], np.ndarray]:
    """``f(x[, t])`` of the library, its primals and the mask, for the rows in LIVE."""
    import jax.numpy as jnp

    # with a temperature, the row whose x - m overflows has a t-gradient that
    # overflows too (about max_float * cotangent / t); it is left out there
    rows = _rows("float64")[[i for i in LIVE if i != 9 or "t-" not in variant]]
    # one row where only masked entries are NaN: live with the mask, dead without
    rows = np.concatenate([rows, [[NAN, 1.0, 2.0, NINF, -0.5, 0.0, NAN]]])
    mask = np.ones(rows.shape, dtype=bool)
    mask[-1, [0, 6]] = False
    if "where" in variant:
        mask &= _mask(len(rows))
    else:
        rows = rows[:-1]
        mask = mask[:-1]
    w = jnp.asarray(mask)
    x = jnp.asarray(rows)
    t_col = jnp.asarray(np.linspace(0.5, 2.5, len(rows))[:, None])
    axis = 0 if variant == "axis0" else -1
    fn = FUNCS.get(name)

    def call(*args: Any) -> Any:
        v = args[0]
        opts: dict[str, Any] = {"where": w} if "where" in variant else {}
        if "t-array" in variant:
            opts["temperature"] = args[1]
        if variant == "t-float":
            opts["temperature"] = 1.75
        if fn is None:
            return sx.logsumexp(v, axis=axis, **opts)
        return fn(v, axis=axis, **opts)

    primals = (x, t_col) if "t-array" in variant else (x,)
    return call, primals, mask


GRAD_VARIANTS = ["plain", "where", "t-float", "t-array", "where+t-array", "axis0"]


def _grad_params() -> list[tuple[str, str]]:
    return [
        (n, v)
        for n in KINDS
        for v in GRAD_VARIANTS
        if not (n == "logsumexp" and v.startswith("t"))
        and not (n == "logsumexp" and "t-array" in v)
    ]


@pytest.mark.parametrize(("name", "variant"), _grad_params())
def test_vjp_equals_generic_autodiff(name: str, variant: str) -> None:
    import jax
    import jax.numpy as jnp

    call, primals, _ = _grad_case(name, variant)
    out = call(*primals)
    # a -inf output does not vary: its cotangent is 0 in any loss that stays
    # finite (the generic autodiff passes it on or not depending on the max)
    g = jnp.where(out == NINF, 0.0, _cotangent(out.shape, 11))
    fast = _vjp(call, primals, g)
    generic = _vjp(lambda *a: _generic(call, *a), primals, g)
    for f, r in zip(fast, generic, strict=True):
        assert np.isfinite(f).all(), f
        assert np.isfinite(r).all(), r
        np.testing.assert_allclose(f, r, rtol=1e-13, atol=1e-13)
    if variant in ("where", "where+t-array"):  # the same under an outer jit
        fast_jit = _vjp(jax.jit(call), primals, g)
        for f, fj in zip(fast, fast_jit, strict=True):
            np.testing.assert_allclose(fj, f, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", KINDS)
def test_contract_zeros_in_the_gradient(name: str) -> None:
    """Exactly 0 for masked entries, -inf entries, +inf slices and slices with nothing left."""
    call, (x,), mask = _grad_case(name, "where")
    out = call(x)
    (gx,) = _vjp(call, (x,), _cotangent(out.shape, 5))
    rows = np.asarray(x)
    assert np.all(gx[~mask] == 0)
    z = rows if name != "softmin" else -rows
    for i in range(len(rows)):
        live = mask[i]
        v = z[i][live]
        if not (v > NINF).any() or (v == INF).any():
            assert np.all(gx[i] == 0), (i, gx[i])
        elif name != "log_softmax":  # -inf entries carry no mass
            assert np.all(gx[i][live & (z[i] == NINF)] == 0), (i, gx[i])


@pytest.mark.parametrize("name", KINDS)
def test_jacobians_forward_and_reverse(name: str) -> None:
    import jax
    import jax.numpy as jnp

    call, (x,), _ = _grad_case(name, "where")
    jf = np.asarray(jax.jacfwd(call)(x))
    jr = np.asarray(jax.jacrev(call)(x))
    jg = np.asarray(jax.jacrev(lambda v: _generic(call, v))(x))
    assert np.isfinite(jf).all()
    np.testing.assert_allclose(jf, jr, rtol=1e-13, atol=1e-13)
    # the rows of finite outputs (the generic autodiff differentiates -inf ones)
    finite = np.isfinite(np.asarray(call(x)))
    np.testing.assert_allclose(jf[finite], jg[finite], rtol=1e-13, atol=1e-13)
    # one finite row against the textbook Jacobian
    row = jnp.asarray(_rows("float64")[0])
    r = np.asarray(row)
    e = np.exp(
        (-r if name == "softmin" else r) - np.max(-r if name == "softmin" else r)
    )
    p = e / e.sum()
    want = {
        "softmax": np.diag(p) - np.outer(p, p),
        "softmin": np.outer(p, p) - np.diag(p),
        "log_softmax": np.eye(7) - np.outer(np.ones(7), p),
        "logsumexp": p,
    }[name]
    fn = FUNCS.get(name, sx.logsumexp)
    np.testing.assert_allclose(
        np.asarray(jax.jacfwd(fn)(row)), want, rtol=1e-14, atol=1e-15
    )


@pytest.mark.parametrize("name", KINDS)
def test_hessian_equals_generic(name: str) -> None:
    """Second derivatives run through the custom rules again."""
    import jax
    import jax.numpy as jnp

    row = jnp.asarray([0.5, -1.0, 2.0, NINF, 0.0, 2.0])
    w = jnp.asarray([True, True, True, True, True, False])
    weights = jnp.linspace(-1.0, 1.0, 6)

    def loss(v: Any) -> Any:
        if name == "logsumexp":
            return sx.logsumexp(v, where=w)
        keep = w & (v > NINF)  # finite outputs (for softmin: row has no -inf)
        out = jnp.where(keep, FUNCS[name](v, where=w), 0.0)
        return jnp.sum(jnp.where(keep, jnp.cos(out) * weights, 0.0))

    h = np.asarray(jax.hessian(loss)(row))
    hg = np.asarray(jax.hessian(lambda v: _generic(loss, v))(row))
    assert np.isfinite(h).all()
    np.testing.assert_allclose(h, hg, rtol=1e-12, atol=1e-13)


# ===========================================================================
# Transformations and jax_debug_nans


@pytest.mark.parametrize("name", KINDS)
def test_no_nan_anywhere_under_debug_nans(name: str) -> None:
    """Masked NaNs, +inf, -inf and empty slices: no operation makes a NaN, in any mode."""
    import jax

    variant = "where+t-array" if name != "logsumexp" else "where"
    call, primals, _ = _grad_case(name, variant)
    out = call(*primals)
    g = _cotangent(out.shape, 3)
    with jax_debug_nans():
        call(*primals)
        jax.jit(call)(*primals)
        _vjp(call, primals, g)
        _vjp(jax.jit(call), primals, g)
        jax.jacfwd(call)(*primals)
        jax.jit(jax.jacrev(call))(*primals)


@pytest.mark.parametrize("name", KINDS)
def test_vmap_equals_batched_call(name: str) -> None:
    import jax
    import jax.numpy as jnp

    rows = _rows("float64")[LIVE]
    x = jnp.asarray(rows)
    w = jnp.asarray(_mask(len(rows)))
    t = jnp.asarray(np.linspace(0.5, 2.5, len(rows)))
    fn = FUNCS.get(name)
    if fn is None:
        batched = sx.logsumexp(x, axis=-1, where=w)
        mapped = jax.vmap(lambda r, m: sx.logsumexp(r, where=m))(x, w)
        grads = jax.vmap(jax.grad(lambda r, m: sx.logsumexp(r, where=m)))(x, w)
        want_g = _vjp(
            lambda v: sx.logsumexp(v, axis=-1, where=w), (x,), jnp.ones(len(rows))
        )[0]
    else:
        batched = fn(x, where=w, temperature=t[:, None])
        mapped = jax.vmap(lambda r, m, tt: fn(r, where=m, temperature=tt))(x, w, t)
        grads = jax.vmap(
            jax.grad(
                lambda r, m, tt: jnp.sum(
                    jnp.where(m & (r > NINF), fn(r, where=m, temperature=tt), 0.0)
                )
            )
        )(x, w, t)
        cot = jnp.where(w & (x > NINF), 1.0, 0.0)
        want_g = _vjp(lambda v: fn(v, where=w, temperature=t[:, None]), (x,), cot)[0]
    assert_same(mapped, batched, jnp.float64)
    np.testing.assert_allclose(np.asarray(grads), want_g, rtol=1e-13, atol=1e-13)
    # vmapped over columns, under jit
    if fn is None:
        cols = jax.jit(jax.vmap(sx.logsumexp, in_axes=1))(x)
        want = sx.logsumexp(x, axis=0)
    else:
        cols = jax.jit(jax.vmap(fn, in_axes=1))(x)
        want = fn(x.T, axis=-1)
    assert_same(cols, want, jnp.float64)


def test_traced_temperature_gradient_equals_generic() -> None:
    """A scalar temperature traced under jit: its gradient comes from JAX's autodiff."""
    import jax
    import jax.numpy as jnp

    rows = _rows("float64")[[0, 1, 6, 7, 9, 10, 11]]  # finite maxima throughout
    x = jnp.asarray(rows)
    for fn in FUNCS.values():
        g = _cotangent(rows.shape, 9)

        def f(v: Any, t: Any, fn: Callable[..., Any] = fn) -> Any:
            return fn(v, temperature=t)

        t = jnp.asarray(1.3)
        g = jnp.where(f(x, t) == NINF, 0.0, g)  # as in test_vjp_equals_generic_autodiff
        fast = _vjp(jax.jit(f), (x, t), g)
        generic = _vjp(jax.jit(lambda v, t, f=f: _generic(f, v, t)), (x, t), g)
        for a, b in zip(fast, generic, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
