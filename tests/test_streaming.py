"""The streaming normaliser: states of chunks combine into the logsumexp of the whole.

References are independent of the code under test: mpmath on the concatenated
rows (``_reference.mp_logsumexp``), hand-written special-value rules of the
contract table (docs/contract.md) and, for gradients, the softmax of the whole row
computed in float64 NumPy.

Accuracy: the random rows have a maximum >= 0, where logsumexp's contract
bound (2 ulp of the exact value, docs/contract.md) holds without the cancellation
allowance that ``test_accuracy`` grants when ``m < 0``; the streamed result is
held to that same bound however the row is cut. Half-precision chunks are
held in float32 states and rounded once by ``logsumexp_finish(dtype=)``: 1 ulp
of the exact value, as logsumexp itself.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from _reference import (
    mp_log_softmax_rounded_shift,
    mp_logsumexp,
    mp_softmax_rounded_shift,
    rel_error,
    ulp_error,
)
from conftest import needs
from numpy.testing import assert_array_equal

import softmax_xp as sx

NAN, INF = math.nan, math.inf
HALF = ("float16", "bfloat16")

# cut points of a row of 50 entries: uneven, with empty and one-entry chunks
CUTS = {
    "one": [0, 50],
    "halves": [0, 25, 50],
    "uneven": [0, 1, 1, 17, 18, 49, 50],
    "singles": list(range(51)),
}


def _chunks(x: np.ndarray, cuts: list[int], axis: int) -> list[np.ndarray]:
    idx = [slice(None)] * x.ndim
    out = []
    for i, j in itertools.pairwise(cuts):
        idx[axis] = slice(i, j)
        out.append(x[tuple(idx)])
    return out


def _streamed(be: Any, parts: list[np.ndarray], axis: int, **kw: Any) -> Any:
    states = [sx.logsumexp_state(be.asarray(p), axis, **kw) for p in parts]
    return sx.logsumexp_combine(*states)


def _rows(rng: np.random.Generator, dtype: str, shape: tuple[int, int]) -> np.ndarray:
    """Rows of several scales whose maximum is >= 0 (no cancellation in m + log1p(s'))."""
    scale = np.array([0.1, 1.0, 30.0, 300.0])[:, None]
    x = rng.normal(size=shape) * np.resize(scale, (shape[0], 1))
    x = np.abs(x) * np.sign(x - 0.2)  # most negative, some positive
    x[:, 0] = np.abs(x[:, 0])  # the maximum is >= 0
    return x.astype(dtype)


def _np(be: Any, a: Any) -> np.ndarray:
    return np.asarray(be.to_numpy(a), dtype=np.float64)


# ---------------------------------------------------------------------------
# the combined state is the state of the concatenation


@pytest.mark.parametrize("cuts", list(CUTS), ids=list(CUTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_combined_equals_logsumexp_of_concatenation(be, dtype, cuts, axis):
    rng = np.random.default_rng(len(CUTS[cuts]) + 7 * (axis + 1))
    x = _rows(rng, dtype, (8, 50))
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    state = _streamed(be, _chunks(x, CUTS[cuts], axis), axis)
    got = sx.logsumexp_finish(state)
    assert got.dtype == be.dtype(dtype)
    assert tuple(got.shape) == (8,)
    g = _np(be, got)
    rows = x if axis == -1 else x.T
    for r in range(rows.shape[0]):
        err = float(
            ulp_error(
                np.asarray(g[r], dtype=dtype), mp_logsumexp(rows[r]), np.dtype(dtype)
            )
        )
        assert err <= 2.0, (cuts, r, err)


@pytest.mark.parametrize("dtype", HALF)
def test_half_chunks_keep_float32_states_and_round_once(be, dtype):
    if dtype not in be.float_dtypes:
        pytest.skip(f"{be.name} has no {dtype}")
    rng = np.random.default_rng(3)
    x64 = rng.normal(size=(4, 30)) * 3
    x = be.to_numpy(be.asarray(x64, dtype=dtype))  # the values the chunks hold
    parts = [be.asarray(p, dtype=dtype) for p in _chunks(x, [0, 7, 8, 30], -1)]
    states = [sx.logsumexp_state(p, -1) for p in parts]
    assert all(s.max.dtype == be.dtype("float32") for s in states)
    got = sx.logsumexp_finish(sx.logsumexp_combine(*states), dtype=be.dtype(dtype))
    assert got.dtype == be.dtype(dtype)
    g = be.to_numpy(got)
    for r in range(4):
        exact = mp_logsumexp(np.asarray(x[r], dtype=np.float64))
        assert (
            float(
                ulp_error(
                    g[r], exact, np.dtype(dtype) if dtype == "float16" else "bfloat16"
                )
            )
            <= 1.0
        )


def test_log1p_accuracy_survives_the_split(be):
    # logsumexp([0, -40]) = log1p(e^-40) = 4.248e-18, not 0, across chunks
    state = _streamed(be, [np.array([0.0]), np.array([-40.0])], -1)
    got = float(_np(be, sx.logsumexp_finish(state)))
    want = float(mp_logsumexp(np.array([0.0, -40.0])))
    assert got == pytest.approx(want, rel=4e-16)
    assert want == pytest.approx(4.248354255291589e-18, rel=1e-12)


# ---------------------------------------------------------------------------
# special values (docs/contract.md): hand-written expectations

# each row is cut into the chunks [0:2], [2:3], [3:3] (empty), [3:6]
SPECIAL_ROWS = {
    "finite": ([0.0, 1.0, 2.0, -1.0, 3.0, 0.5], None),
    "ninf chunk": ([-INF, -INF, 1.0, 2.0, 0.0, -1.0], None),
    "all ninf": ([-INF] * 6, None),
    "inf in two chunks": ([INF, 1.0, 2.0, INF, 0.0, -INF], INF),
    "inf and ninf": ([-INF, -INF, INF, -INF, -INF, -INF], INF),
    "nan chunk": ([1.0, 2.0, NAN, 0.0, INF, -INF], NAN),
    "nan with inf": ([INF, INF, 0.0, NAN, 1.0, 2.0], NAN),
}
SPECIAL_CUTS = [0, 2, 3, 3, 6]


def _special_matrix() -> tuple[np.ndarray, list[float | None]]:
    x = np.array([r for r, _ in SPECIAL_ROWS.values()], dtype=np.float64)
    return x, [w for _, w in SPECIAL_ROWS.values()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_special_chunks(be, dtype):
    x, special = _special_matrix()
    x = x.astype(dtype)
    state = _streamed(be, _chunks(x, SPECIAL_CUTS, -1), -1)
    got = _np(be, sx.logsumexp_finish(state))
    for r, (name, want) in enumerate(zip(SPECIAL_ROWS, special, strict=True)):
        finite = x[r][np.isfinite(x[r])]
        if want is not None:  # inf or NaN, exactly
            assert_array_equal(got[r], want, err_msg=name)
        elif finite.size:  # finite entries, maybe some -inf
            exact = math.log(sum(math.exp(float(v)) for v in finite))
            assert got[r] == pytest.approx(exact, rel=1e-6), name
        else:  # nothing left
            assert got[r] == -INF, name


def test_special_states(be):
    # two +inf entries in different chunks: the state counts them (rest = k - 1)
    x, _ = _special_matrix()
    state = _streamed(be, _chunks(x, SPECIAL_CUTS, -1), -1)
    m, rest = _np(be, state.max), _np(be, state.rest)
    names = list(SPECIAL_ROWS)
    i = names.index("inf in two chunks")
    assert (m[i], rest[i]) == (INF, 1.0)
    i = names.index("inf and ninf")
    assert (m[i], rest[i]) == (INF, 0.0)
    i = names.index("all ninf")
    assert (m[i], rest[i]) == (-INF, -1.0)
    for name in ("nan chunk", "nan with inf"):
        i = names.index(name)
        assert np.isnan(m[i]), name
        assert np.isnan(rest[i]), name
    i = names.index("finite")
    assert m[i] == 3.0
    want = sum(math.exp(v - 3.0) for v in SPECIAL_ROWS["finite"][0]) - 1.0
    assert rest[i] == pytest.approx(want, rel=1e-14)


def test_masked_chunks_are_absent(be):
    x = np.array([[NAN, 5.0, 1.0, 2.0], [7.0, INF, NAN, 0.0]])
    where = np.array([[False, False, True, True], [False, False, False, False]])
    states = [
        sx.logsumexp_state(be.asarray(x[:, :2]), -1, where=be.asarray(where[:, :2])),
        sx.logsumexp_state(be.asarray(x[:, 2:]), -1, where=be.asarray(where[:, 2:])),
    ]
    got = _np(be, sx.logsumexp_finish(sx.logsumexp_combine(*states)))
    assert got[0] == pytest.approx(math.log(math.exp(1.0) + math.exp(2.0)), rel=1e-14)
    assert got[1] == -INF  # fully masked, NaN and inf under the mask included


def test_empty_state_is_neutral(be):
    x, _ = _special_matrix()
    state = sx.logsumexp_state(be.asarray(x), -1)
    empty = sx.logsumexp_state(be.asarray(np.zeros((x.shape[0], 0))), -1)
    assert_array_equal(_np(be, empty.max), -INF)
    assert_array_equal(_np(be, empty.rest), -1.0)
    for combined in (
        sx.logsumexp_combine(empty, state),
        sx.logsumexp_combine(state, empty),
    ):
        assert_array_equal(_np(be, combined.max), _np(be, state.max))
        assert_array_equal(_np(be, combined.rest), _np(be, state.rest))


def test_order_and_grouping(be):
    # exact on the special rows (their states are small integers), close on the rest
    x, _ = _special_matrix()
    a, b, c = (
        sx.logsumexp_state(be.asarray(p), -1) for p in _chunks(x, [0, 2, 3, 6], -1)
    )
    results = [
        sx.logsumexp_combine(a, b, c),
        sx.logsumexp_combine(sx.logsumexp_combine(c, a), b),
        sx.logsumexp_combine(b, sx.logsumexp_combine(c, a)),
    ]
    first = _np(be, sx.logsumexp_finish(results[0]))
    for other in results[1:]:
        got = _np(be, sx.logsumexp_finish(other))
        special = ~np.isfinite(first)
        assert_array_equal(got[special], first[special])
        np.testing.assert_allclose(got[~special], first[~special], rtol=4e-16)


def test_keepdims_broadcasts_back_over_the_chunk(be):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 10))
    parts = _chunks(x, [0, 3, 10], -1)
    state = sx.logsumexp_combine(
        *(sx.logsumexp_state(be.asarray(p), -1, keepdims=True) for p in parts)
    )
    assert tuple(state.max.shape) == (3, 4, 1)
    lse = sx.logsumexp_finish(state)
    logp = be.asarray(parts[1]) - lse  # the second chunk's log-probabilities
    want = x[..., 3:] - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))
    np.testing.assert_allclose(_np(be, logp), want, rtol=1e-13, atol=1e-15)


def test_tuple_axes_and_broadcasting_states(be):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 8))
    # chunk 1 reduces two axes of a (2, 3, 5) piece; chunk 2 is one row per batch
    s1 = sx.logsumexp_state(be.asarray(x[:, :, :5]), (1, 2))
    s2 = sx.logsumexp_state(be.asarray(x[:, :, 5:]), (1, 2))
    got = _np(be, sx.logsumexp_finish(sx.logsumexp_combine(s1, s2)))
    want = np.log(np.sum(np.exp(x), axis=(1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # a scalar state broadcasts against a vector of states
    s0 = sx.logsumexp_state(be.asarray(np.array([0.0, 1.0])))
    got = _np(be, sx.logsumexp_finish(sx.logsumexp_combine(s0, s1)))
    want = np.log(np.exp(0.0) + np.exp(1.0) + np.sum(np.exp(x[:, :, :5]), axis=(1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-14)


def test_states_keep_namespace_device_and_inputs(be):
    x = np.array([[1.0, 2.0, INF], [NAN, 0.0, -INF]])
    arr = be.asarray(x)
    before = be.to_numpy(arr).copy()
    state = sx.logsumexp_state(arr, -1)
    lse = sx.logsumexp_finish(sx.logsumexp_combine(state, state))
    for a in (*state, lse):
        assert type(a) is type(arr)
        assert sx._compat.device(a) == sx._compat.device(arr)
    assert_array_equal(be.to_numpy(arr), before)


def test_integer_chunks_take_the_default_float(be):
    state = sx.logsumexp_state(be.asarray([[1, 2], [3, 4]], dtype="int32"), -1)
    assert state.max.dtype == be.default_float
    got = _np(be, sx.logsumexp_finish(state))
    np.testing.assert_allclose(
        got, [math.log(math.e + math.e**2), math.log(math.e**3 + math.e**4)]
    )


@pytest.mark.parametrize("int_name", ["int32", "int64", "uint8", "bool"])
def test_from_state_takes_integer_chunks(be, int_name):
    """softmax_from_state used to refuse the integer chunks logsumexp_state takes.

    Integer and bool chunks take the state's floating dtype (the default float,
    which logsumexp_state gave the state).
    """
    data = [[1, 0, 1], [0, 0, 1]] if int_name == "bool" else [[1, 2, 3], [4, 0, 7]]
    a = be.asarray(np.array(data)[:, :2], dtype=int_name)
    b = be.asarray(np.array(data)[:, 2:], dtype=int_name)
    state = sx.logsumexp_combine(
        sx.logsumexp_state(a, -1, keepdims=True),
        sx.logsumexp_state(b, -1, keepdims=True),
    )
    rows = np.array(data, dtype=np.float64)
    lse = np.log(np.sum(np.exp(rows), axis=-1, keepdims=True))
    for fn, want in (
        (sx.softmax_from_state, np.exp(rows - lse)),
        (sx.log_softmax_from_state, rows - lse),
    ):
        got = [fn(a, state), fn(b, state)]
        for g in got:
            assert g.dtype == be.default_float
        out = np.concatenate([_np(be, g) for g in got], axis=-1)
        np.testing.assert_allclose(
            out, want, rtol=1e-6 if "32" in str(be.default_float) else 1e-14
        )
    # a float32 state (from float32 chunks) gives integer chunks float32
    if "float32" in be.float_dtypes and be.default_float != be.dtype("float32"):
        s32 = sx.logsumexp_state(be.asarray(rows, dtype="float32"), -1, keepdims=True)
        assert sx.softmax_from_state(
            be.asarray(np.array(data), dtype=int_name), s32
        ).dtype == be.dtype("float32")


# ---------------------------------------------------------------------------
# softmax_from_state / log_softmax_from_state: each chunk normalised by the whole


def _chunked_softmax(be: Any, x: np.ndarray, cuts: list[int], **kw: Any) -> list[Any]:
    parts = [be.asarray(p) for p in _chunks(x, cuts, -1)]
    wheres = kw.pop("where", None)
    masks = (
        [None] * len(parts)
        if wheres is None
        else [be.asarray(w) for w in _chunks(wheres, cuts, -1)]
    )
    state = sx.logsumexp_combine(
        *(
            sx.logsumexp_state(p, -1, keepdims=True, where=w)
            for p, w in zip(parts, masks, strict=True)
        )
    )
    out = []
    for p, w in zip(parts, masks, strict=True):
        for f in (sx.softmax_from_state, sx.log_softmax_from_state):
            out.append(f(p, state, where=w))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chunked_softmax_within_the_contract_bound(be, dtype):
    # docs/contract.md: softmax and log_softmax within 4 rel-ulp of the exact result
    # for fl(x - max), the same bound as the one-pass functions (test_accuracy)
    rng = np.random.default_rng(11)
    x = _rows(rng, dtype, (6, 50))
    x[2, 10:30] = -INF
    cuts = CUTS["uneven"]
    results = _chunked_softmax(be, x, cuts)
    for got in results:
        assert got.dtype == be.dtype(dtype)
    soft = np.concatenate([_np(be, a) for a in results[0::2]], axis=-1)
    logp = np.concatenate([_np(be, a) for a in results[1::2]], axis=-1)
    # as in test_accuracy: an exact value below the smallest normal number is
    # held to an absolute error of that number (flush-to-zero backends give 0)
    tiny = float(np.finfo(dtype).tiny)
    for r in range(x.shape[0]):
        exact = mp_softmax_rounded_shift(x[r])
        err = rel_error(soft[r], exact, np.dtype(dtype))
        sub = np.abs(np.asarray(exact, dtype=np.float64)) < tiny
        assert err[~sub].max() <= 4.0, (r, err[~sub].max())
        assert (np.abs(soft[r][sub] - np.asarray(exact, np.float64)[sub]) <= tiny).all()
        err = rel_error(logp[r], mp_log_softmax_rounded_shift(x[r]), np.dtype(dtype))
        assert err.max() <= 4.0, (r, err.max())


def test_chunked_softmax_special_rows_equal_the_one_pass_ones(be):
    x, _ = _special_matrix()
    results = _chunked_softmax(be, x, SPECIAL_CUTS)
    soft = np.concatenate([_np(be, a) for a in results[0::2]], axis=-1)
    logp = np.concatenate([_np(be, a) for a in results[1::2]], axis=-1)
    names = list(SPECIAL_ROWS)
    # hand-written rows of the contract table
    i = names.index("inf in two chunks")
    assert_array_equal(soft[i], [0.5, 0, 0, 0.5, 0, 0])
    assert_array_equal(logp[i], [-math.log(2), -INF, -INF, -math.log(2), -INF, -INF])
    i = names.index("inf and ninf")
    assert_array_equal(soft[i], [0, 0, 1, 0, 0, 0])
    assert_array_equal(logp[i], [-INF, -INF, 0, -INF, -INF, -INF])
    i = names.index("all ninf")
    assert_array_equal(soft[i], 0.0)
    assert_array_equal(logp[i], -INF)
    for name in ("nan chunk", "nan with inf"):
        i = names.index(name)
        assert np.isnan(soft[i]).all(), name
        assert np.isnan(logp[i]).all(), name
    i = names.index("finite")
    row = np.array(SPECIAL_ROWS["finite"][0])
    want = np.exp(row - 3.0) / np.sum(np.exp(row - 3.0))
    np.testing.assert_allclose(soft[i], want, rtol=1e-15)


def test_chunked_softmax_masks(be):
    x = np.array([[NAN, 5.0, 1.0, 2.0, INF], [7.0, INF, NAN, 0.0, 1.0]])
    where = np.array([[False, True, False, True, False], [False] * 5])
    results = _chunked_softmax(be, x, [0, 2, 5], where=where)
    soft = np.concatenate([_np(be, a) for a in results[0::2]], axis=-1)
    logp = np.concatenate([_np(be, a) for a in results[1::2]], axis=-1)
    total = 1.0 + math.exp(-3.0)  # e^(5 - 5) + e^(2 - 5)
    want = [0.0, 1.0 / total, 0.0, math.exp(-3.0) / total, 0.0]
    np.testing.assert_allclose(soft[0], want, rtol=4 * np.finfo(np.float64).eps)
    assert_array_equal(logp[0][~where[0]], -INF)
    assert_array_equal(soft[1], 0.0)  # fully masked: nothing left
    assert_array_equal(logp[1], -INF)


@pytest.mark.parametrize("dtype", HALF)
def test_chunked_softmax_half(be, dtype):
    if dtype not in be.float_dtypes:
        pytest.skip(f"{be.name} has no {dtype}")
    x = np.zeros((1, 70_000))  # 70,000 equal half-precision logits
    parts = [be.asarray(p, dtype=dtype) for p in _chunks(x, [0, 30_000, 70_000], -1)]
    state = sx.logsumexp_combine(
        *(sx.logsumexp_state(p, -1, keepdims=True) for p in parts)
    )
    got = [sx.softmax_from_state(p, state) for p in parts]
    assert all(g.dtype == be.dtype(dtype) for g in got)
    want = float(be.to_numpy(be.asarray(np.array(1 / 70_000), dtype=dtype)))
    for g in got:
        assert_array_equal(be.to_numpy(g), want)


def test_from_state_errors(be):
    x = be.asarray(np.zeros((2, 3)))
    state = sx.logsumexp_state(x, -1)  # no keepdims: (2,) does not fit (2, 3)
    with pytest.raises(ValueError, match=r"softmax_from_state: state.max of shape"):
        sx.softmax_from_state(x, state)
    with pytest.raises(TypeError, match=r"log_softmax_from_state: state="):
        sx.log_softmax_from_state(x, (1.0, 2.0))
    good = sx.logsumexp_state(x, -1, keepdims=True)
    with pytest.raises(ValueError, match=r"softmax_from_state: where"):
        sx.softmax_from_state(x, good, where=be.asarray(np.ones((3, 3), dtype=bool)))


# ---------------------------------------------------------------------------
# traced and lazy backends


@needs("jax")
def test_jax_jit_scan_and_grad():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 40))
    x[1, :] = -INF  # nothing left: zero gradient, no NaN
    x[2, 5] = -INF
    chunks = jnp.asarray(x.reshape(3, 4, 10).transpose(1, 0, 2))  # 4 chunks of 10

    def streamed(chunks: Any) -> Any:
        def step(state: Any, chunk: Any) -> tuple[Any, None]:
            return sx.logsumexp_combine(state, sx.logsumexp_state(chunk, -1)), None

        empty = sx.LogSumExpState(
            jnp.full((3,), -jnp.inf, dtype=chunks.dtype),
            jnp.full((3,), -1.0, dtype=chunks.dtype),
        )
        state, _ = jax.lax.scan(step, empty, chunks)
        return sx.logsumexp_finish(state)

    got = np.asarray(jax.jit(streamed)(chunks))
    with np.errstate(divide="ignore"):
        want = np.log(np.sum(np.exp(x), axis=-1))
    np.testing.assert_allclose(got, want, rtol=1e-14)

    # d lse / d x = softmax(x); rows with nothing left get 0
    def loss(c: Any) -> Any:
        lse = streamed(c)
        return jnp.sum(jnp.where(jnp.isfinite(lse), lse, 0.0))

    grad = jax.jit(jax.grad(loss))(chunks)
    grad = np.asarray(grad).transpose(1, 0, 2).reshape(3, 40)
    assert np.isfinite(grad).all()
    soft = np.zeros_like(x)
    for r in (0, 2):  # row 1 has nothing left
        e = np.exp(x[r] - np.max(x[r]))
        soft[r] = e / np.sum(e)
    np.testing.assert_allclose(grad, soft, rtol=1e-13, atol=1e-300)


@needs("torch")
def test_torch_gradient_is_softmax():
    import torch

    x = torch.tensor(
        [[0.0, 1.0, 2.0, -INF, 3.0], [-INF] * 5],
        dtype=torch.float64,
        requires_grad=True,
    )
    states = [sx.logsumexp_state(x[:, :2], -1), sx.logsumexp_state(x[:, 2:], -1)]
    lse = sx.logsumexp_finish(sx.logsumexp_combine(*states))
    lse[0].backward()
    g = x.grad.numpy()
    row = np.array([0.0, 1.0, 2.0, -INF, 3.0])
    want = np.exp(row - 3.0) / np.sum(np.exp(row - 3.0))
    np.testing.assert_allclose(g[0], want, rtol=1e-14)
    assert_array_equal(g[1], 0.0)


@needs("dask")
def test_dask_stays_lazy():
    import dask.array as da
    from test_lazy import _no_compute

    x = da.from_array(np.arange(24.0).reshape(4, 6), chunks=(2, 3))
    with _no_compute():
        states = [sx.logsumexp_state(x[:, :3], -1), sx.logsumexp_state(x[:, 3:], -1)]
        lse = sx.logsumexp_finish(sx.logsumexp_combine(*states))
    assert isinstance(lse, da.Array)
    want = np.log(np.sum(np.exp(np.arange(24.0).reshape(4, 6)), axis=-1))
    np.testing.assert_allclose(lse.compute(), want, rtol=1e-14)


# ---------------------------------------------------------------------------
# errors name the function, the parameter and the value


def test_errors(be):
    state = sx.logsumexp_state(be.asarray([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"logsumexp_combine: needs at least one state"):
        sx.logsumexp_combine()
    with pytest.raises(
        TypeError, match=r"logsumexp_combine: states\[1\]=.*not a LogSumExpState"
    ):
        sx.logsumexp_combine(state, 3.0)
    with pytest.raises(
        TypeError, match=r"logsumexp_finish: state=.*not a LogSumExpState"
    ):
        sx.logsumexp_finish(be.asarray([1.0]))
    with pytest.raises(TypeError, match=r"logsumexp_finish: dtype="):
        sx.logsumexp_finish(state, dtype="float32")
    with pytest.raises(ValueError, match=r"logsumexp_state: .*axis"):
        sx.logsumexp_state(be.asarray([1.0, 2.0]), 3)
    a = sx.logsumexp_state(be.asarray(np.zeros((2, 3))), -1)
    b = sx.logsumexp_state(be.asarray(np.zeros((3, 3))), -1)
    with pytest.raises(ValueError, match=r"logsumexp_combine: the states' shapes"):
        sx.logsumexp_combine(a, b)


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match=r"logsumexp_state: x has the complex dtype"):
        sx.logsumexp_state(np.array([1 + 1j]))


def test_mixed_namespaces_are_refused():
    pytest.importorskip("array_api_strict")
    import array_api_strict as xs

    a = sx.logsumexp_state(np.array([1.0]))
    b = sx.logsumexp_state(xs.asarray([1.0]))
    with pytest.raises(
        TypeError, match=r"logsumexp_combine: states\[1\]\.max is an array of"
    ):
        sx.logsumexp_combine(a, b)
