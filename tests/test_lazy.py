"""Lazy and traced backends: ``jax.jit`` / ``jax.vmap`` and Dask.

Under ``jax.jit`` every option that is not an array is static (closed over),
arrays (``x``, ``where``, ``b``, an array ``temperature``) may be traced. The
jitted result must equal the eager one, and both the independent reference.

On Dask a call must build a graph and compute nothing: the tests run every
call under a scheduler and a callback that fail on any computation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from conftest import needs

import softmax_xp as sx

NINF = -np.inf
INF = np.inf
NAN = np.nan

# ---------------------------------------------------------------------------
# An independent float64 reference of the contract table (docs/contract.md), written
# as plain loops over slices: masked entries are deleted before the maths.


def _norm_axes(axis: Any, nd: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(nd))
    if isinstance(axis, int):
        return (axis % nd,)
    return tuple(ax % nd for ax in axis)


def _slices(a: np.ndarray, axis: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """``a`` as (n_slices, slice_len) with the reduced axes last; and the kept shape."""
    nd = a.ndim
    axes = _norm_axes(axis, nd)
    kept = tuple(i for i in range(nd) if i not in axes)
    moved = np.transpose(a, kept + axes)
    kept_shape = tuple(a.shape[i] for i in kept)
    n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
    return moved.reshape(-1, n), kept_shape


def _unslice(rows: np.ndarray, like: np.ndarray, axis: Any) -> np.ndarray:
    nd = like.ndim
    axes = _norm_axes(axis, nd)
    kept = tuple(i for i in range(nd) if i not in axes)
    perm = kept + axes
    moved_shape = tuple(like.shape[i] for i in perm)
    return np.transpose(rows.reshape(moved_shape), np.argsort(perm))


def ref_softmax(
    x: Any,
    axis: Any = -1,
    *,
    where: Any = None,
    temperature: Any = None,
    log: bool = False,
) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if temperature is not None:
        x = x / np.asarray(temperature, dtype=np.float64)
    w = np.broadcast_to(np.asarray(True if where is None else where), x.shape)
    xs, _ = _slices(x, axis)
    ws, _ = _slices(w, axis)
    out = np.full(xs.shape, NINF if log else 0.0)
    for i in range(xs.shape[0]):
        v = xs[i][ws[i]]
        res = np.full(v.shape, NINF if log else 0.0)
        if np.isnan(v).any():
            res[:] = NAN
        elif (v == INF).any():
            k = np.count_nonzero(v == INF)
            res[v == INF] = -np.log(k) if log else 1.0 / k
        elif (v > NINF).any():
            m = v.max()
            e = np.exp(v - m)
            res = (v - m) - np.log(e.sum()) if log else e / e.sum()
        out[i][ws[i]] = res
    return _unslice(out, x, axis)


def ref_logsumexp(
    x: Any,
    axis: Any = None,
    *,
    b: Any = None,
    where: Any = None,
    keepdims: bool = False,
    return_sign: bool = False,
) -> Any:
    x = np.asarray(x, dtype=np.float64)
    bb = np.asarray(1.0 if b is None else b, dtype=np.float64)
    x, bb = np.broadcast_arrays(x, bb)
    w = np.broadcast_to(np.asarray(True if where is None else where), x.shape)
    xs, kept_shape = _slices(x, axis)
    bs, _ = _slices(bb, axis)
    ws, _ = _slices(w, axis)
    lse = np.empty(xs.shape[0])
    sign = np.empty(xs.shape[0])
    for i in range(xs.shape[0]):
        keep = ws[i] & (bs[i] != 0)
        v, c = xs[i][keep], bs[i][keep]
        if np.isnan(v).any() or np.isnan(c).any():
            lse[i], sign[i] = NAN, NAN
        elif (v == INF).any():
            tot = c[v == INF].sum()
            assert tot != 0, "reference: weights of +inf entries cancel"
            lse[i], sign[i] = INF, np.sign(tot)
        elif not (v > NINF).any():
            lse[i], sign[i] = NINF, 0.0
        else:
            m = v.max()
            s = np.sum(c * np.exp(v - m))
            lse[i], sign[i] = m + np.log(abs(s)), np.sign(s)
    if not return_sign:
        lse = np.where(sign < 0, NAN, lse)
    lse = lse.reshape(kept_shape)
    sign = sign.reshape(kept_shape)
    if keepdims:
        red = np.sum(np.zeros(x.shape), axis=axis, keepdims=True).shape
        lse, sign = lse.reshape(red), sign.reshape(red)
    return (lse, sign) if return_sign else lse


def _eps(dtype: Any) -> float:
    try:
        return float(np.finfo(dtype).eps)
    except ValueError:  # bfloat16 (ml_dtypes) is unknown to np.finfo
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps)


def assert_close(actual: Any, expected: Any, dtype: Any, scale: float = 1.0) -> None:
    """Equal up to a few units of ``dtype``'s eps; non-finite values must match."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    eps = _eps(dtype)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(actual), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected))
    # log-domain outputs carry absolute errors relative to the inputs' size
    np.testing.assert_allclose(actual, expected, rtol=8 * eps, atol=8 * eps * scale)


# ---------------------------------------------------------------------------
# Shared inputs: a (4, 5) batch with the contract's special rows, and options.

X_SPECIAL = np.array(
    [
        [0.5, -1.2, 3.0, 2.0, -0.3],
        [1.0, NINF, 2.0, NINF, 0.0],
        [1.0, INF, 2.0, 0.0, NINF],
        [NINF, NINF, NINF, NINF, NINF],
    ]
)
X_MASKED = np.array(
    [
        [0.5, -1.2, 3.0, 2.0, -0.3],
        [NAN, 1.0, 2.0, NAN, NINF],  # NaN only where masked
        [NAN, INF, NINF, 1.0, 2.0],  # fully masked
        [INF, 1.0, NINF, 3.0, INF],  # +inf only where masked
    ]
)
MASK = np.array(
    [
        [True, True, False, True, True],
        [False, True, True, False, True],
        [False, False, False, False, False],
        [False, True, True, True, False],
    ]
)
X_FINITE = np.array(
    [
        [0.5, -1.2, 3.0, 2.0, -0.3],
        [-4.0, 0.25, 1.5, 0.0, 2.5],
        [3.5, 3.5, -0.5, 1.0, -2.0],
        [10.0, -10.0, 0.0, 1e-3, 7.5],
    ]
)
T_COL = np.array([[0.5], [2.0], [1.0], [4.0]])
B_POS = np.array([1.0, 2.0, 0.5, 3.0, 0.25])
B_MIXED = np.array([1.0, -2.0, 0.5, 3.0, -0.25])
SCALE = 10.0  # max |x| over the finite entries above

SOFTMAXES = {
    "softmax": sx.softmax,
    "log_softmax": sx.log_softmax,
    "softmin": sx.softmin,
}


def _ref_for(name: str, x: np.ndarray, **kw: Any) -> np.ndarray:
    if name == "softmin":
        return ref_softmax(-np.asarray(x), **kw)
    return ref_softmax(x, log=name == "log_softmax", **kw)


# (id, x, options): the softmax-family configurations covered everywhere
SOFTMAX_CONFIGS: list[tuple[str, np.ndarray, dict[str, Any]]] = [
    ("special", X_SPECIAL, {}),
    ("special-axis0", X_SPECIAL, {"axis": 0}),
    ("finite-axisNone", X_FINITE, {"axis": None}),
    ("finite-axis(0,1)", X_FINITE, {"axis": (0, 1)}),
    ("special-axis()", X_SPECIAL, {"axis": ()}),
    ("masked", X_MASKED, {"where": MASK}),
    ("masked-row-broadcast", X_FINITE, {"where": MASK[0]}),
    ("temperature-scalar", X_SPECIAL, {"temperature": 2.5}),
    ("temperature-array", X_SPECIAL, {"temperature": T_COL}),
    ("masked-temperature", X_MASKED, {"where": MASK, "temperature": T_COL}),
]

LSE_CONFIGS: list[tuple[str, np.ndarray, dict[str, Any]]] = [
    ("special-axis-1", X_SPECIAL, {"axis": -1}),
    ("finite-axisNone", X_FINITE, {}),
    ("special-axis0-keepdims", X_SPECIAL, {"axis": 0, "keepdims": True}),
    ("finite-axis(1,0)", X_FINITE, {"axis": (1, 0)}),
    ("special-axis()", X_SPECIAL, {"axis": ()}),
    ("masked", X_MASKED, {"axis": -1, "where": MASK}),
    ("b", X_SPECIAL, {"axis": -1, "b": B_POS}),
    ("b-masked", X_MASKED, {"axis": -1, "b": B_POS, "where": MASK}),
    ("b-sign", X_FINITE, {"axis": -1, "b": B_MIXED, "return_sign": True}),
    (
        "sign-keepdims",
        X_MASKED,
        {"axis": 1, "where": MASK, "return_sign": True, "keepdims": True},
    ),
]


def _with_dtypes(
    configs: list[tuple[str, Any, Any]], f32_ids: tuple[str, ...]
) -> tuple[list[tuple[str, str, Any, Any]], list[str]]:
    """Every configuration in float64, a few also in float32: params and ids."""
    params = [("float64", *c) for c in configs]
    params += [("float32", *c) for c in configs if c[0] in f32_ids]
    return params, [f"{p[0]}-{p[1]}" for p in params]


SOFTMAX_JIT = _with_dtypes(SOFTMAX_CONFIGS, ("special", "masked-temperature"))
# softmin is softmax(-x): fewer configurations (each one is a compilation)
# (each configuration is one XLA compilation: log_softmax and softmin share
# most of softmax's code, so they take the configurations that differ most)
_LOG_IDS = (
    "float64-special",
    "float64-special-axis0",
    "float64-special-axis()",
    "float64-masked",
    "float64-masked-temperature",
    "float32-masked-temperature",
)
_SOFTMIN_IDS = ("float64-special", "float64-masked-temperature", "float32-special")
FAMILY_JIT = [
    (name, *p)
    for name in SOFTMAXES
    for p, pid in zip(*SOFTMAX_JIT, strict=True)
    if name == "softmax"
    or (name == "log_softmax" and pid in _LOG_IDS)
    or (name == "softmin" and pid in _SOFTMIN_IDS)
]
FAMILY_JIT_IDS = [f"{c[0]}-{c[1]}-{c[2]}" for c in FAMILY_JIT]
LSE_JIT = _with_dtypes(LSE_CONFIGS, ("special-axis-1", "b-masked"))


# ===========================================================================
# JAX


def _jax_opts(
    opts: dict[str, Any], dtype: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split options into static ones and arrays (traced under jit)."""
    import jax.numpy as jnp

    static, traced = {}, {}
    for k, v in opts.items():
        if isinstance(v, np.ndarray):
            traced[k] = jnp.asarray(v, dtype=jnp.bool_ if v.dtype == bool else dtype)
        else:
            static[k] = v
    return static, traced


@needs("jax")
@pytest.mark.parametrize(
    ("name", "dtype_name", "cid", "x_np", "opts"), FAMILY_JIT, ids=FAMILY_JIT_IDS
)
def test_jit_softmax_family_equals_eager(
    name: str, cid: str, x_np: np.ndarray, opts: dict[str, Any], dtype_name: str
) -> None:
    import jax
    import jax.numpy as jnp

    fn = SOFTMAXES[name]
    dtype = jnp.dtype(dtype_name)
    x = jnp.asarray(x_np, dtype=dtype)
    static, traced = _jax_opts(opts, dtype)
    eager = fn(x, **static, **traced)
    jitted = jax.jit(lambda x, kw: fn(x, **static, **kw))(x, traced)
    assert isinstance(jitted, jax.Array)
    assert jitted.dtype == dtype
    assert jitted.shape == x.shape
    assert_close(jitted, eager, dtype, SCALE)
    x_in = np.asarray(x, dtype=np.float64)
    assert_close(eager, _ref_for(name, x_in, **opts), dtype, SCALE)


@needs("jax")
@pytest.mark.parametrize(
    ("dtype_name", "cid", "x_np", "opts"), LSE_JIT[0], ids=LSE_JIT[1]
)
def test_jit_logsumexp_equals_eager(
    cid: str, x_np: np.ndarray, opts: dict[str, Any], dtype_name: str
) -> None:
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    x = jnp.asarray(x_np, dtype=dtype)
    static, traced = _jax_opts(opts, dtype)
    eager = sx.logsumexp(x, **static, **traced)
    jitted = jax.jit(lambda x, kw: sx.logsumexp(x, **static, **kw))(x, traced)
    ref = ref_logsumexp(np.asarray(x, dtype=np.float64), **opts)
    if opts.get("return_sign"):
        assert isinstance(jitted, tuple)
        assert len(jitted) == 2
        pairs = list(zip(jitted, eager, ref, strict=True))
    else:
        pairs = [(jitted, eager, ref)]
    for j, e, r in pairs:
        assert isinstance(j, jax.Array)
        assert j.dtype == dtype
        assert_close(j, e, dtype, SCALE)
        assert_close(e, r, dtype, SCALE)


@needs("jax")
def test_jit_traced_temperature() -> None:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(X_SPECIAL)
    for t_np in (np.float64(0.5), np.float64(3.0), T_COL, np.full((4, 5), 1.5)):
        t = jnp.asarray(t_np)
        for name, fn in SOFTMAXES.items():
            jitted = jax.jit(lambda x, t, fn=fn: fn(x, temperature=t))(x, t)
            eager = fn(x, temperature=t)
            assert_close(jitted, eager, jnp.float64, SCALE)
            assert_close(
                eager, _ref_for(name, X_SPECIAL, temperature=t_np), jnp.float64, SCALE
            )
    # the same compiled function serves several temperature values
    f = jax.jit(lambda x, t: sx.softmax(x, temperature=t))
    for tv in (0.25, 1.0, 8.0):
        assert_close(
            f(x, jnp.asarray(tv)), ref_softmax(X_SPECIAL, temperature=tv), jnp.float64
        )


@needs("jax")
def test_jit_dtype_option() -> None:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(X_SPECIAL)
    for dt in (jnp.float32, jnp.float16, jnp.bfloat16):
        for name, fn in SOFTMAXES.items():
            jitted = jax.jit(lambda x, fn=fn, dt=dt: fn(x, dtype=dt))(x)
            eager = fn(x, dtype=dt)
            assert jitted.dtype == jnp.dtype(dt)
            assert_close(jitted, eager, dt, SCALE)
            ref = _ref_for(name, np.asarray(x.astype(dt), dtype=np.float64))
            assert_close(eager, ref, dt, SCALE)
        lse = jax.jit(lambda x, dt=dt: sx.logsumexp(x, axis=-1, dtype=dt))(x)
        assert lse.dtype == jnp.dtype(dt)
        assert_close(lse, sx.logsumexp(x, axis=-1, dtype=dt), dt, SCALE)


@needs("jax")
def test_jit_integer_input() -> None:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray([[1, 2, 3], [-4, 0, 4]])
    for name, fn in SOFTMAXES.items():
        out = jax.jit(fn)(x)
        assert out.dtype == jnp.float64
        assert_close(out, _ref_for(name, np.asarray(x)), jnp.float64, 4.0)
    out = jax.jit(sx.logsumexp)(x)
    assert out.dtype == jnp.float64
    assert_close(out, ref_logsumexp(np.asarray(x)), jnp.float64, 4.0)


@needs("jax")
@pytest.mark.parametrize("name", list(SOFTMAXES))
def test_vmap_softmax_family(name: str) -> None:
    import jax
    import jax.numpy as jnp

    fn = SOFTMAXES[name]
    x = jnp.asarray(X_SPECIAL)
    # row by row == batched along the last axis
    assert_close(jax.vmap(fn)(x), _ref_for(name, X_SPECIAL), jnp.float64, SCALE)
    # column by column, batch on the output's last axis
    cols = jax.vmap(fn, in_axes=1, out_axes=1)(x)
    assert_close(cols, _ref_for(name, X_SPECIAL, axis=0), jnp.float64, SCALE)
    # mask and temperature batched with the rows
    xm, w, t = jnp.asarray(X_MASKED), jnp.asarray(MASK), jnp.asarray(T_COL[:, 0])
    out = jax.vmap(lambda r, m, tt: fn(r, where=m, temperature=tt))(xm, w, t)
    assert_close(
        out, _ref_for(name, X_MASKED, where=MASK, temperature=T_COL), jnp.float64, SCALE
    )
    # a 3-d batch, vmapped over the middle axis, under jit
    x3 = jnp.asarray(np.stack([X_FINITE, X_SPECIAL, X_FINITE[::-1]]))
    out3 = jax.jit(jax.vmap(lambda a: fn(a, axis=0), in_axes=1, out_axes=1))(x3)
    ref3 = _ref_for(name, np.asarray(x3), axis=0)
    assert_close(out3, ref3, jnp.float64, SCALE)


@needs("jax")
def test_vmap_logsumexp() -> None:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(X_SPECIAL)
    assert_close(
        jax.vmap(sx.logsumexp)(x), ref_logsumexp(X_SPECIAL, axis=-1), jnp.float64, SCALE
    )
    xm, w, b = jnp.asarray(X_MASKED), jnp.asarray(MASK), jnp.asarray(B_POS)
    out = jax.vmap(lambda r, m: sx.logsumexp(r, b=b, where=m))(xm, w)
    assert_close(
        out, ref_logsumexp(X_MASKED, axis=-1, b=B_POS, where=MASK), jnp.float64, SCALE
    )
    lse, sign = jax.vmap(
        lambda r: sx.logsumexp(r, b=jnp.asarray(B_MIXED), return_sign=True), in_axes=0
    )(jnp.asarray(X_FINITE))
    rl, rs = ref_logsumexp(X_FINITE, axis=-1, b=B_MIXED, return_sign=True)
    assert_close(lse, rl, jnp.float64, SCALE)
    assert_close(sign, rs, jnp.float64)
    # vmap over columns, with keepdims
    cols = jax.jit(jax.vmap(lambda c: sx.logsumexp(c, keepdims=True), in_axes=1))(x)
    assert cols.shape == (5, 1)
    assert_close(cols, ref_logsumexp(X_SPECIAL, axis=0)[:, None], jnp.float64, SCALE)


# ===========================================================================
# Dask


class _ComputeForbidden(AssertionError):
    pass


def _raising_scheduler(*args: Any, **kwargs: Any) -> Any:
    msg = "softmax-xp computed a Dask graph during a call"
    raise _ComputeForbidden(msg)


@contextmanager
def _no_compute() -> Iterator[None]:
    """Fail on any Dask computation, whatever scheduler the code asks for."""
    import dask
    from dask.callbacks import Callback

    def _start(dsk: Any) -> None:
        msg = "softmax-xp started a Dask computation during a call"
        raise _ComputeForbidden(msg)

    with dask.config.set(scheduler=_raising_scheduler), Callback(start=_start):
        yield


def _dask(a: np.ndarray, chunks: Any) -> Any:
    import dask.array as da

    return da.from_array(a, chunks=chunks)


X3 = np.random.default_rng(11).standard_normal((4, 6, 5)) * 3.0
X3[0, 1, :] = NINF
X3[1, :, 2] = NINF
X3[2, 3, 1] = INF
X3[3, 0, 0] = NAN
MASK3 = np.random.default_rng(12).random((4, 6, 5)) < 0.75
MASK3[1, 2, :] = False
SCALE3 = float(np.max(np.abs(X3[np.isfinite(X3)])))
CHUNKS3 = (2, 3, 5)


def _nonreduced(axis: Any, nd: int) -> list[int]:
    if axis is None:
        return []
    axes = (axis,) if isinstance(axis, int) else axis
    red = {a % nd for a in axes}
    return [i for i in range(nd) if i not in red]


def _dask_options(
    variant: str, *, mixed_b: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same options as NumPy arrays and as Dask arrays chunked like x."""
    opts_np: dict[str, Any] = {}
    opts_da: dict[str, Any] = {}
    if "where" in variant:
        opts_np["where"] = MASK3
        opts_da["where"] = _dask(MASK3, CHUNKS3)
    if "temperature" in variant:
        t = np.linspace(0.5, 3.0, 6).reshape(6, 1)
        opts_np["temperature"] = t
        opts_da["temperature"] = _dask(t, (3, 1))
    if "b" in variant:
        b = (
            np.array([1.0, -2.0, 0.5, 3.0, -0.25])
            if mixed_b
            else np.linspace(0.5, 2.0, 5)
        )
        opts_np["b"] = b
        opts_da["b"] = _dask(b, 5)
    return opts_np, opts_da


@needs("dask")
@pytest.mark.parametrize("name", list(SOFTMAXES))
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), None, ()])
@pytest.mark.parametrize(
    "variant", ["plain", "where", "temperature", "where+temperature"]
)
def test_dask_softmax_family_is_lazy(name: str, axis: Any, variant: str) -> None:
    import dask.array as da

    fn = SOFTMAXES[name]
    x = _dask(X3, CHUNKS3)
    opts_np, opts_da = _dask_options(variant)
    with _no_compute():
        out = fn(x, axis=axis, **opts_da)
    assert isinstance(out, da.Array)
    assert out.dtype == np.float64
    assert out.shape == X3.shape
    for i in _nonreduced(axis, 3):
        assert out.chunks[i] == x.chunks[i], (
            f"axis {i}: {out.chunks[i]} != {x.chunks[i]}"
        )
    got = out.compute()
    assert isinstance(got, np.ndarray)
    assert_close(got, fn(X3, axis=axis, **opts_np), np.float64, SCALE3)
    assert_close(got, _ref_for(name, X3, axis=axis, **opts_np), np.float64, SCALE3)


@needs("dask")
@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None, ()])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("variant", ["plain", "where", "b", "b+where+sign"])
def test_dask_logsumexp_is_lazy(axis: Any, keepdims: bool, variant: str) -> None:
    import dask.array as da

    x = _dask(X3, CHUNKS3)
    sign = "sign" in variant
    opts_np, opts_da = _dask_options(variant, mixed_b=sign)
    for opts in (opts_np, opts_da):
        opts.update(axis=axis, keepdims=keepdims, return_sign=sign)
    with _no_compute():
        out = sx.logsumexp(x, **opts_da)
    outs = out if sign else (out,)
    wants = sx.logsumexp(X3, **opts_np) if sign else (sx.logsumexp(X3, **opts_np),)
    refs = ref_logsumexp(X3, **opts_np) if sign else (ref_logsumexp(X3, **opts_np),)
    assert len(outs) == len(wants) == len(refs)
    kept = _nonreduced(axis, 3)
    for o, w_np, r in zip(outs, wants, refs, strict=True):
        assert isinstance(o, da.Array)
        assert o.dtype == np.float64
        assert o.shape == r.shape
        # non-reduced axes keep their chunks; reduced ones are gone or size 1
        if keepdims:
            want_chunks = tuple(x.chunks[i] if i in kept else (1,) for i in range(3))
        else:
            want_chunks = tuple(x.chunks[i] for i in kept)
        assert o.chunks == want_chunks
        got = o.compute()
        assert isinstance(got, np.ndarray)
        assert_close(got, w_np, np.float64, SCALE3)
        assert_close(got, r, np.float64, SCALE3)


@needs("dask")
def test_dask_options_chunked_differently_are_lazy() -> None:
    """where / b / temperature with their own chunking: still lazy and right."""
    x = _dask(X3, CHUNKS3)
    w = _dask(MASK3, (1, 2, 5))
    t_np = np.linspace(0.5, 3.0, 5)
    t = _dask(t_np, 2)
    b_np = np.linspace(0.5, 2.0, 5)
    b = _dask(b_np, 2)
    with _no_compute():
        outs = {
            name: fn(x, axis=1, where=w, temperature=t)
            for name, fn in SOFTMAXES.items()
        }
        lse = sx.logsumexp(x, axis=(0, 1), b=b, where=w)
    for name, out in outs.items():
        ref = _ref_for(name, X3, axis=1, where=MASK3, temperature=t_np)
        assert_close(out.compute(), ref, np.float64, SCALE3)
    ref = ref_logsumexp(X3, axis=(0, 1), b=b_np, where=MASK3)
    assert_close(lse.compute(), ref, np.float64, SCALE3)


@needs("dask")
def test_dask_dtype_and_integer_input_are_lazy() -> None:
    import dask.array as da

    xi = da.from_array(np.arange(24).reshape(4, 6) % 7 - 3, chunks=(2, 3))
    xf = _dask(X3, CHUNKS3)
    with _no_compute():
        outs = [
            (sx.softmax(xi), np.float64),
            (sx.logsumexp(xi, axis=0), np.float64),
            (sx.log_softmax(xf, dtype=np.dtype(np.float32)), np.float32),
            (sx.logsumexp(xf, axis=1, dtype=np.dtype(np.float32)), np.float32),
            (sx.softmax([[1.0, 2.0], [3.0, 4.0]], xp=da), np.float64),
        ]
    for out, dt in outs:
        assert isinstance(out, da.Array)
        assert out.dtype == dt
    xi_np = np.arange(24).reshape(4, 6) % 7 - 3
    assert_close(outs[0][0].compute(), ref_softmax(xi_np), np.float64, 4.0)
    assert_close(outs[1][0].compute(), ref_logsumexp(xi_np, axis=0), np.float64, 4.0)
    assert_close(
        outs[2][0].compute(),
        ref_softmax(X3.astype(np.float32), log=True),
        np.float32,
        SCALE3,
    )
    assert_close(
        outs[3][0].compute(),
        ref_logsumexp(X3.astype(np.float32), axis=1),
        np.float32,
        SCALE3,
    )


@needs("dask")
def test_dask_single_chunk_and_many_chunks_agree() -> None:
    """The chunking of the reduced axis does not change the answer."""
    for chunks in ((4, 6, 5), (1, 1, 1), (3, 4, 2)):
        x = _dask(X3, chunks)
        with _no_compute():
            outs = {
                "softmax": sx.softmax(x, axis=1),
                "log_softmax": sx.log_softmax(
                    x, axis=(1, 2), where=_dask(MASK3, chunks)
                ),
                "lse": sx.logsumexp(x, axis=(0, 1)),
            }
        assert_close(
            outs["softmax"].compute(), ref_softmax(X3, axis=1), np.float64, SCALE3
        )
        assert_close(
            outs["log_softmax"].compute(),
            ref_softmax(X3, axis=(1, 2), where=MASK3, log=True),
            np.float64,
            SCALE3,
        )
        assert_close(
            outs["lse"].compute(), ref_logsumexp(X3, axis=(0, 1)), np.float64, SCALE3
        )


def test_reference_agrees_with_scipy_on_finite_input() -> None:
    """The reference above, checked against SciPy where SciPy is defined."""
    scipy_special = pytest.importorskip("scipy.special")

    for axis in (-1, 0, None, (0, 1)):
        assert_close(
            ref_softmax(X_FINITE, axis=axis),
            scipy_special.softmax(X_FINITE, axis=axis),
            np.float64,
            SCALE,
        )
        assert_close(
            ref_softmax(X_FINITE, axis=axis, log=True),
            scipy_special.log_softmax(X_FINITE, axis=axis),
            np.float64,
            SCALE,
        )
        assert_close(
            ref_logsumexp(X_FINITE, axis=axis),
            scipy_special.logsumexp(X_FINITE, axis=axis),
            np.float64,
            SCALE,
        )
        got = ref_logsumexp(X_FINITE, axis=axis, b=B_MIXED, return_sign=True)
        want = scipy_special.logsumexp(X_FINITE, axis=axis, b=B_MIXED, return_sign=True)
        assert_close(got[0], want[0], np.float64, SCALE)
        assert_close(got[1], want[1], np.float64)
