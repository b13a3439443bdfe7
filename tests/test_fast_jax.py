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
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


def test_narrowing_dtype_rounds_the_input_first() -> None:
    """dtype=float16 rounds x to float16 before anything (``_call.input_rounding``).

    1000.4 is 1000.5 in float16: the softmax of ``[1000.5, 1000]``, not of
    ``[1000.4, 1000]`` computed in float32 and rounded at the end.
    """
    import jax
    import jax.numpy as jnp

    x = jnp.asarray([[1000.4, 1000.0], [7e4, 6.5e4]], dtype=jnp.float32)
    for name, fn in FUNCS.items():

        def f(v: Any, fn: Any = fn) -> Any:
            return fn(v, axis=1, dtype=jnp.float16)

        want = np.asarray(_generic(f, x))
        for got in (f(x), jax.jit(f)(x)):
            np.testing.assert_array_equal(np.asarray(got), want, name, strict=True)
    # logsumexp rounds to float32, its compute dtype: the same as x here
    want = _generic(sx.logsumexp, x, axis=1, dtype=jnp.float16)
    got = sx.logsumexp(x, axis=1, dtype=jnp.float16)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)


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


# ===========================================================================
# Length-1 axes: XLA drops a reduction's initial value there (issue 10)

# (shape, axis): every reduced axis of length 1, or one among several
ONE_AXES = [
    ((1,), -1),
    ((1,), None),
    ((3, 1), 1),
    ((1, 4), 0),
    ((2, 1, 1), (1, 2)),
    ((2, 1, 3), (0, 1)),  # a length-1 axis among several
    ((3, 1, 2), (1, 2)),
]
ONE_VALUES = (NINF, INF, NAN, 1.0, -2.5, 1e308, -1e308)


def _one_input(shape: tuple[int, ...]) -> np.ndarray:
    """Every value of ONE_VALUES in turn, so that some slices hold only -inf."""
    n = int(np.prod(shape))
    return np.resize(np.asarray(ONE_VALUES), n).reshape(shape)


def test_length_one_axis_by_hand() -> None:
    """The reproducers of issue 10, against the contract table."""
    import jax
    import jax.numpy as jnp

    np.testing.assert_array_equal(np.asarray(sx.softmax(jnp.asarray([NINF]))), [0.0])
    np.testing.assert_array_equal(np.asarray(sx.softmin(jnp.asarray([INF]))), [0.0])
    np.testing.assert_array_equal(
        np.asarray(sx.log_softmax(jnp.asarray([NINF]))), [NINF]
    )
    assert float(sx.logsumexp(jnp.asarray([NINF]))) == NINF
    assert float(sx.logsumexp(jnp.asarray([1.0]), where=jnp.asarray([False]))) == NINF
    lse = sx.logsumexp(jnp.ones((3, 1)), axis=1, where=jnp.asarray([False]))
    np.testing.assert_array_equal(np.asarray(lse), [NINF] * 3)
    lse, sign = sx.logsumexp(jnp.asarray([NINF]), return_sign=True)
    assert (float(lse), float(sign)) == (NINF, 0.0)
    np.testing.assert_array_equal(
        np.asarray(jax.grad(sx.logsumexp)(jnp.asarray([NINF]))), [0.0]
    )
    # a float32 max_float entry is not a slice with nothing left
    big = float(jnp.finfo(jnp.float32).max)
    x32 = jnp.asarray([[-big], [NINF]], dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(sx.softmax(x32)), [[1.0], [0.0]])
    np.testing.assert_array_equal(
        np.asarray(sx.logsumexp(x32, axis=1)), np.asarray([-big, NINF], np.float32)
    )


def _one_options(shape: tuple[int, ...], variant: str) -> dict[str, Any]:
    import jax.numpy as jnp

    opts: dict[str, Any] = {}
    rng = np.random.default_rng(len(shape) + 7 * len(variant))
    if variant in ("where", "where+t-array"):
        opts["where"] = jnp.asarray(rng.random(shape) < 0.5)
    if variant == "where-bcast":  # a mask of fewer dimensions, broadcast
        opts["where"] = jnp.asarray(np.arange(shape[-1]) % 2 == 1)
    if variant == "where-none":
        opts["where"] = jnp.zeros(shape, dtype=bool)
    if variant == "t-float":
        opts["temperature"] = 0.25
    if "t-array" in variant:
        opts["temperature"] = jnp.asarray(rng.uniform(0.5, 2.0, shape))
    return opts


ONE_VARIANTS = ["plain", "where", "where-bcast", "where-none", "t-float", "t-array"]


@pytest.mark.parametrize(("shape", "axis"), ONE_AXES, ids=str)
@pytest.mark.parametrize("name", KINDS)
def test_length_one_axes_equal_generic(
    name: str, shape: tuple[int, ...], axis: Any
) -> None:
    """Every option on reductions over length-1 axes, eagerly and under jit."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(_one_input(shape))
    fn = FUNCS.get(name, sx.logsumexp)
    for variant in ONE_VARIANTS:
        if name == "logsumexp" and variant.startswith("t"):
            continue
        opts = _one_options(shape, variant)
        extras: list[dict[str, Any]] = [{}]
        if name == "logsumexp":
            extras = [{"keepdims": True}, {"return_sign": True}]

        for extra in extras:
            kw = {"axis": axis, **opts, **extra}

            def call(v: Any, kw: dict[str, Any] = kw) -> Any:
                return fn(v, **kw)

            want = _generic(call, x)
            for got in (call(x), jax.jit(call)(x)):
                for g, w in zip(
                    np.atleast_1d(got) if not isinstance(got, tuple) else got,
                    np.atleast_1d(want) if not isinstance(want, tuple) else want,
                    strict=True,
                ):
                    assert_same(g, w, jnp.float64)


@pytest.mark.parametrize(("shape", "axis"), ONE_AXES, ids=str)
@pytest.mark.parametrize("name", KINDS)
def test_length_one_axes_gradient(name: str, shape: tuple[int, ...], axis: Any) -> None:
    """Finite, the generic autodiff's, under jit too; 0 where the output is constant."""
    import jax
    import jax.numpy as jnp

    # NaN slices have NaN gradients: leave NaN out here
    values = np.where(np.isnan(_one_input(shape)), 0.5, _one_input(shape))
    x = jnp.asarray(values)
    fn = FUNCS.get(name, sx.logsumexp)
    for variant in ("plain", "where", "where-bcast", "where+t-array"):
        if name == "logsumexp" and "t-" in variant:
            continue
        opts = _one_options(shape, variant)

        def loss(v: Any, opts: dict[str, Any] = opts) -> Any:
            out = fn(v, axis=axis, **opts)
            # infinite outputs are constant; a loss keeps them out (twice: no NaN)
            live = jnp.isfinite(out)
            return jnp.sum(jnp.where(live, jnp.sin(jnp.where(live, out, 0.0)), 0.0))

        g = np.asarray(jax.grad(loss)(x))
        assert np.isfinite(g).all(), (variant, g)
        np.testing.assert_allclose(
            np.asarray(jax.jit(jax.grad(loss))(x)), g, rtol=1e-14, atol=0
        )
        want = np.asarray(jax.grad(lambda v, f=loss: _generic(f, v))(x))
        np.testing.assert_allclose(g, want, rtol=1e-13, atol=1e-14)
        # a one-element slice is a constant distribution: no gradient at all
        if name != "logsumexp" and all(
            shape[a] == 1
            for a in (range(len(shape)) if axis is None else np.atleast_1d(axis))
        ):
            assert np.all(g == 0), g


def test_overflow_made_by_the_caller_under_jit() -> None:
    """An entry made +inf by the caller's own scaling stays +inf inside one XLA program.

    XLA folds ``(x * 4) * 0.25`` into ``x`` and contracts ``x * 4 - c`` into an
    FMA: either would revive the finite value whose overflow made the +inf.
    """
    import jax
    import jax.numpy as jnp

    cases = [
        (jnp.asarray([-2.5, 1e308]), 4.0),
        (jnp.asarray([-2.5, 1e308]), 2.0),
        (jnp.asarray([-2.5, 3e38], dtype=jnp.float32), 2.0),
    ]
    for x, k in cases:
        scaled = {
            "softmax": jax.jit(lambda v, k=k: sx.softmax(v * k)),
            "log_softmax": jax.jit(lambda v, k=k: sx.log_softmax(v * k)),
            "softmin": jax.jit(lambda v, k=k: sx.softmin(v * -k)),
            "tempered": jax.jit(lambda v, k=k: sx.softmax(v, temperature=1.0 / k)),
        }
        for name, f in scaled.items():
            want = [NINF, 0.0] if name == "log_softmax" else [0.0, 1.0]
            np.testing.assert_array_equal(np.asarray(f(x), np.float64), want, name)
        lse = jax.jit(lambda v, k=k: sx.logsumexp(v * k))(x)
        assert float(lse) == INF
    # the smallest normal number as the maximum (halving it would flush to 0)
    for dtype in (jnp.float32, jnp.float64):
        tiny = float(jnp.finfo(dtype).tiny)
        out = sx.log_softmax(jnp.asarray([tiny], dtype=dtype))
        np.testing.assert_array_equal(np.asarray(out), [0.0])


# ===========================================================================
# return_sign under a narrowing dtype= (issue 10)


def test_sign_of_a_total_that_rounds_to_zero() -> None:
    """docs/contract.md: the sign of the exact total, 1 when something was left."""
    import jax
    import jax.numpy as jnp

    x = jnp.asarray([-70000.0, -80000.0], dtype=jnp.float32)

    def f(v: Any) -> Any:
        return sx.logsumexp(v, dtype=jnp.float16, return_sign=True)

    for lse, sign in (f(x), jax.jit(f)(x)):
        assert lse.dtype == sign.dtype == jnp.float16
        assert float(lse) == NINF  # exp(-70000) underflows float16's range
        assert float(sign) == 1.0
    # per slice, beside one where nothing is left and one that is NaN
    rows = jnp.asarray([[-70000.0, NINF], [NINF, NINF], [NAN, 1.0]])
    lse, sign = sx.logsumexp(rows, axis=1, dtype=jnp.float16, return_sign=True)
    np.testing.assert_array_equal(np.asarray(lse, np.float64), [NINF, NINF, NAN])
    np.testing.assert_array_equal(np.asarray(sign, np.float64), [1.0, 0.0, NAN])


# ===========================================================================
# Masked entries: their outputs are constants (docs/contract.md)


def _deleted_row_vjp(name: str, x: np.ndarray, t: Any, g: np.ndarray) -> np.ndarray:
    """The gradient of ``jax.nn``'s function on the unmasked entries [0, 2] only."""
    import jax
    import jax.numpy as jnp

    peer = {
        "softmax": jax.nn.softmax,
        "log_softmax": jax.nn.log_softmax,
        "softmin": lambda v: jax.nn.softmax(-v),
    }[name]
    keep = np.asarray([0, 2])
    tk = 1.0 if t is None else (t if isinstance(t, float) else np.asarray(t)[keep])
    _, pull = jax.vjp(lambda v: peer(v / tk), jnp.asarray(x[keep]))
    (gk,) = pull(jnp.asarray(g[keep]))
    out = np.zeros(3)
    out[keep] = np.asarray(gk)
    return out


@pytest.mark.parametrize("name", list(FUNCS))
def test_masked_entries_get_no_gradient(name: str) -> None:
    """x=[1, v, 2], where=[T, F, T]: the gradient of the same function on [1, 2]."""
    import jax
    import jax.numpy as jnp

    w = jnp.asarray([True, False, True])
    rng = np.random.default_rng(21)
    cotangents = [np.asarray([0.0, 1.0, 0.0]), *rng.normal(size=(3, 3))]
    fn = FUNCS[name]
    for masked in (5.0, NAN, INF, NINF):
        x = np.asarray([1.0, masked, 2.0])
        for t in (None, 0.7, np.asarray([0.5, 0.0, 1.5])):
            opts: dict[str, Any] = {"where": w}
            if t is not None:
                opts["temperature"] = t if isinstance(t, float) else jnp.asarray(t)

            def f(v: Any, opts: dict[str, Any] = opts) -> Any:
                return fn(v, **opts)

            for g in cotangents:
                want = _deleted_row_vjp(name, x, t, g)
                for h in (f, jax.jit(f)):
                    _, pull = jax.vjp(h, jnp.asarray(x))
                    (got,) = pull(jnp.asarray(g))
                    np.testing.assert_allclose(
                        np.asarray(got), want, rtol=1e-14, atol=1e-15
                    )
                    assert np.asarray(got)[1] == 0.0
    # an array temperature's masked entry gets no gradient either
    x = jnp.asarray([1.0, 5.0, 2.0])
    tt = jnp.asarray([0.5, 3.0, 1.5])
    _, pull = jax.vjp(lambda t: fn(x, where=w, temperature=t), tt)
    (gt,) = pull(jnp.asarray(cotangents[1]))
    assert np.asarray(gt)[1] == 0.0
    assert np.isfinite(np.asarray(gt)).all()


# ===========================================================================
# Generated cases: the fast path against the generic core


def _pool(dtype_name: str) -> list[float]:
    fi = _finfo(dtype_name)
    big, tiny = float(fi.max), float(fi.tiny)
    return [
        *(0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 100.0),
        *(big, -big, big / 3, tiny, -tiny, tiny / 4, -tiny / 4),  # tiny/4: subnormal
        *(INF, NINF, NINF, NAN),
    ]


@st.composite
def _generated(draw: Any) -> tuple[str, str, np.ndarray, dict[str, Any]]:
    """(kind, dtype, x as float64, options as NumPy arrays / Python values)."""
    kind = draw(st.sampled_from(KINDS))
    dtype_name = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    pool = _pool(dtype_name)
    n = int(np.prod(shape))
    x = np.asarray(draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)))
    x = x.reshape(shape)
    if shape and shape[0] and draw(st.booleans()):
        x[0] = NINF  # slices with nothing left
    ndim = len(shape)
    axis = draw(
        st.one_of(
            st.none(),
            st.just(()),
            st.integers(-ndim, ndim - 1) if ndim else st.nothing(),
            st.lists(st.integers(0, ndim - 1), unique=True, min_size=1).map(tuple)
            if ndim
            else st.nothing(),
        )
    )
    opts: dict[str, Any] = {"axis": axis}
    if draw(st.booleans()):
        # a mask of a broadcastable shape: leading dimensions dropped, some set to 1
        k = draw(st.integers(0, ndim))
        wshape = tuple(d if draw(st.booleans()) else 1 for d in shape[k:])
        wn = int(np.prod(wshape))
        w = draw(st.lists(st.booleans(), min_size=wn, max_size=wn))
        opts["where"] = np.asarray(w, dtype=bool).reshape(wshape)
    if kind == "logsumexp":
        opts["keepdims"] = draw(st.booleans())
        opts["return_sign"] = draw(st.booleans())
    else:
        t = draw(st.sampled_from([None, None, "float", "array"]))
        if t == "float":
            opts["temperature"] = draw(st.sampled_from([0.25, 0.7, 1.0, 3.0, 1e3]))
        elif t == "array":
            k = draw(st.integers(0, ndim))
            tshape = tuple(d if draw(st.booleans()) else 1 for d in shape[k:])
            tn = int(np.prod(tshape))
            tv = draw(
                st.lists(
                    st.sampled_from([0.25, 0.7, 1.0, 3.0, 1e-3, 1e3]),
                    min_size=tn,
                    max_size=tn,
                )
            )
            opts["temperature"] = np.asarray(tv).reshape(tshape)
    return kind, dtype_name, x, opts


@settings(max_examples=40, deadline=None)
@given(case=_generated())
# issue 10: a length-1 axis, and the smallest normal number as the maximum
@example(case=("softmax", "float32", np.asarray([NINF]), {"axis": None}))
@example(
    case=(
        "log_softmax",
        "float32",
        np.asarray([1.1754943508222875e-38]),
        {"axis": None},
    )
)
def test_generated_cases_equal_generic(
    case: tuple[str, str, np.ndarray, dict[str, Any]],
) -> None:
    """Special values at the same places, the rest within a few ulp; eagerly and under jit."""
    import jax
    import jax.numpy as jnp

    kind, dtype_name, values, opts = case
    dtype = jnp.dtype(dtype_name)
    x = jnp.asarray(values, dtype=dtype)
    kw = {
        k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in opts.items()
    }
    fn = FUNCS.get(kind, sx.logsumexp)
    want = _generic(fn, x, **kw)
    eager = fn(x, **kw)
    jitted = jax.jit(lambda v: fn(v, **kw))(x)
    pairs = (
        (want, eager, jitted)
        if isinstance(want, tuple)
        else ((want,), (eager,), (jitted,))
    )
    for w, e, j in zip(*pairs, strict=True):
        assert_same(e, w, dtype)
        assert_same(j, w, dtype)


# ===========================================================================
# logsumexp's s' = S - 1, and the exact pass only where a slice needs it
# (issue 12). A slice needs ``rest`` summed apart when 1 <= S < 2 and |m| < 8.
# Small inputs keep both sums in one pass; ``lse_form`` runs each test with
# both forms (fresh kernels: a jitted kernel keeps the form it was traced with).


@pytest.fixture(params=["one pass", "S - 1 and lax.cond"])
def lse_form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    from softmax_xp._fast import jax as fast

    if request.param != "one pass":
        monkeypatch.setattr(fast, "_ONE_PASS_UP_TO", -1)
    monkeypatch.setattr(fast, "_READY", {})
    return str(request.param)


def _lse_reference(row: np.ndarray) -> float:
    """logsumexp of one row in 60-digit arithmetic (mpmath), as a float."""
    import mpmath

    with mpmath.workdps(60):
        finite = [mpmath.mpf(float(v)) for v in row if np.isfinite(v)]
        total = mpmath.fsum(mpmath.exp(v) for v in finite)
        return float(mpmath.log(total))


# rows by what the fast formulation does with them: S >= 2 (no exact pass),
# 1 <= S < 2 with |m| >= 8 (S - 1 is accurate enough), 1 <= S < 2 with a
# small |m| (the exact pass), and the edges of that band
_LSE_ROWS = {
    "wide": [0.3, -1.2, 0.9, 0.0, -0.4, 0.7],
    "tied": [1.5, 1.5, -3.0, -30.0, -50.0, -60.0],
    "peaked large m": [20.0, -25.0, -30.0, -40.0, -60.0, -90.0],
    "peaked negative m": [-9.0, -49.0, -60.0, -70.0, -80.0, -90.0],
    "peaked small m": [0.0, -40.0, -50.0, -60.0, -70.0, -80.0],
    "peaked m just below 8": [7.9, -30.0, -50.0, -60.0, -70.0, -80.0],
    "peaked m just above -8": [-7.9, -47.0, -55.0, -60.0, -70.0, -80.0],
    "S just below 2": [0.5, 0.5 - 1e-6, -60.0, -70.0, -80.0, -90.0],
}


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.usefixtures("lse_form")
def test_logsumexp_rows_of_each_kind_against_mpmath(dtype_name: str) -> None:
    """Each row kind, alone and in one batch, within 2 ulp of a 60-digit reference."""
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    eps = _eps(dtype)
    rows = np.asarray(list(_LSE_ROWS.values()))
    x = jnp.asarray(rows, dtype=dtype)
    batch = np.asarray(sx.logsumexp(x, axis=1), np.float64)
    for i, name in enumerate(_LSE_ROWS):
        want = _lse_reference(np.asarray(x[i], np.float64))
        alone = float(sx.logsumexp(x[i]))
        np.testing.assert_allclose(alone, want, rtol=2 * eps, atol=0, err_msg=name)
        # a slice's answer does not depend on which other slices share the call
        assert batch[i] == alone, name


@pytest.mark.usefixtures("lse_form")
def test_logsumexp_exact_pass_keeps_the_small_term() -> None:
    """Beside slices that need no exact pass, a slice that does still keeps its tiny term."""
    import jax
    import jax.numpy as jnp

    for dtype in (jnp.float32, jnp.float64):
        x = jnp.asarray(
            [[0.0, -40.0, NINF], [3.0, 3.0, 3.0], [NINF, NINF, NINF], [INF, 0.0, 1.0]],
            dtype=dtype,
        )
        want = np.asarray([4.248354255291589e-18, 3.0 + np.log(3.0), NINF, INF])
        for f in (
            lambda v: sx.logsumexp(v, axis=1),
            jax.jit(lambda v: sx.logsumexp(v, axis=1)),
            jax.vmap(sx.logsumexp),  # the cond becomes a select under vmap
        ):
            got = np.asarray(f(x), np.float64)
            np.testing.assert_allclose(got, want, rtol=2 * _eps(dtype), atol=0)


@pytest.mark.parametrize("axis", [-1, 0, None])
@pytest.mark.parametrize("peaked", [False, True], ids=["S>=2", "exact pass"])
@pytest.mark.usefixtures("lse_form")
def test_logsumexp_both_branches_equal_generic(axis: Any, peaked: bool) -> None:
    """Generated slices that take the fast branch, or also the exact one: the generic answer,
    the gradient too, under jit and vmap."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(12)
    x = rng.normal(size=(6, 33))
    if peaked:
        x[2] = -30.0 + rng.normal(size=33)  # 1 <= S < 2, |m| < 8 on this slice
        x[2, 5] = 0.25
        x[:, 0] = 40.0 if axis == 0 else x[:, 0]
    for dtype in (jnp.float32, jnp.float64):
        v = jnp.asarray(x, dtype=dtype)
        for opts in ({}, {"where": jnp.asarray(rng.random(x.shape) < 0.8)}):
            got = sx.logsumexp(v, axis=axis, **opts)
            want = _generic(sx.logsumexp, v, axis=axis, **opts)
            assert_same(got, want, dtype, ulps=2)
            jitted = jax.jit(lambda a, opts=opts: sx.logsumexp(a, axis=axis, **opts))
            assert_same(jitted(v), want, dtype, ulps=2)

            def loss(a: Any, opts: dict[str, Any] = opts) -> Any:
                return jnp.sum(jnp.sin(sx.logsumexp(a, axis=axis, **opts)))

            grad = jax.grad(loss)(v)
            with sx.force_generic():
                want_grad = jax.grad(lambda a, f=loss: f(a))(v)
            assert_same(grad, want_grad, dtype)
        if axis == -1:
            rows = jax.vmap(sx.logsumexp)(v)
            assert_same(rows, _generic(sx.logsumexp, v, axis=-1), dtype, ulps=2)


def test_repeated_calls_reuse_one_kernel_per_configuration() -> None:
    """The small-call cache: one entry per static configuration, none per temperature
    value; configurations that differ only in what the cache key reads get their own."""
    import jax.numpy as jnp

    from softmax_xp._fast import jax as fast

    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 5)), dtype=jnp.float32)
    sx.softmax(x, temperature=0.5)
    _generic(sx.softmax, x, temperature=0.5)  # the generic core's own entry
    entries = len(fast._READY)
    for t in (0.5, 2.0, 7.0):
        got = sx.softmax(x, temperature=t)
        assert_same(got, _generic(sx.softmax, x, temperature=t), x.dtype)
    assert len(fast._READY) == entries
    # the same shape with other options, axes, dtypes and kinds: each its own answer
    w = jnp.asarray(np.random.default_rng(4).random((3, 5)) < 0.6)
    for fn in (sx.softmax, sx.log_softmax, sx.softmin):
        for v in (x, x.astype(jnp.float64), x.astype(jnp.bfloat16), x[:2]):
            for opts in ({}, {"axis": 0}, {"where": w[: v.shape[0]]}):
                assert_same(fn(v, **opts), _generic(fn, v, **opts), v.dtype)
    for opts in ({}, {"keepdims": True}, {"return_sign": True}, {"axis": 0}):
        got = sx.logsumexp(x, **opts)
        want = _generic(sx.logsumexp, x, **opts)
        for g, wv in zip(
            *((got, want) if isinstance(got, tuple) else ((got,), (want,))), strict=True
        ):
            assert_same(g, wv, x.dtype)
