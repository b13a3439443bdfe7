"""The reference implementation: array API standard functions only.

This module *defines* the contract of docs/contract.md; every fast path must
give its answers. It is the shared kernels of ``_kernels`` put together, one
function per public function: it runs unchanged on array-api-strict, NumPy,
PyTorch, JAX, Dask and CuPy, contains no Python branch on array values (so it
traces under ``jax.jit`` and leaves Dask lazy), and never creates a NaN that
the input did not carry.

Each function takes a validated :class:`~softmax_xp._call.Call`; ``slice_max``
lets a backend whose maximum can drop a NaN give its own (see ``_fast/jax.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from ._call import Call, compute_dtype
from ._compat import Array, Namespace, dtype_kind
from ._kernels import (
    Shifted,
    const,
    constant_where_masked,
    fill,
    inputs,
    log1p_tail,
    nan_where,
    pairwise_sum,
    poison,
    reduce,
    reduced_shape,
    round_to,
    shift,
    squeeze,
    state_rest,
    to_compute,
)

SliceMax = Callable[[Namespace, Array, tuple[int, ...]], Array]


def _shifted(
    xp: Namespace, x: Array, axes: tuple[int, ...], slice_max: SliceMax | None
) -> Shifted:
    return shift(xp, x, axes, None if slice_max is None else slice_max(xp, x, axes))


__all__ = ["log_softmax", "logsumexp", "logsumexp_state", "softmax"]


def softmax(
    call: Call, *, negate: bool = False, slice_max: SliceMax | None = None
) -> Array:
    xp = call.xp
    if call.empty:
        return fill(call, call.shape, 0.0, call.out_dtype)
    x = inputs(call, negate=negate)
    sh = _shifted(xp, x, call.axes, slice_max)
    # the sum as 1 + s', the maxima kept out of it (as in the log1p form): a
    # large term would otherwise swallow the low bits of every small one added
    # to it; nothing left has s' = 0, so the division is by 1
    _, s = log1p_tail(xp, sh, call.axes)
    out = poison(xp, sh.m, sh.e / (1 + s), call.where)
    out = constant_where_masked(xp, out, call.where, 0.0)
    return round_to(xp, out, call.out_dtype)


def log_softmax(
    call: Call, *, negate: bool = False, slice_max: SliceMax | None = None
) -> Array:
    xp = call.xp
    if call.empty:
        return fill(call, call.shape, -float("inf"), call.out_dtype)
    x = inputs(call, negate=negate)
    sh = _shifted(xp, x, call.axes, slice_max)
    _, s = log1p_tail(xp, sh, call.axes)
    out = poison(xp, sh.m, sh.z - xp.log1p(s), call.where)
    out = constant_where_masked(xp, out, call.where, -float("inf"))
    return round_to(xp, out, call.out_dtype)


def logsumexp(
    call: Call,
    *,
    keepdims: bool,
    return_sign: bool,
    slice_max: SliceMax | None = None,
) -> Array | tuple[Array, Array]:
    xp = call.xp
    if dtype_kind(xp, call.compute_dtype) == "complex floating":
        return _logsumexp_complex(call, keepdims=keepdims, return_sign=return_sign)
    if call.empty:
        shape = reduced_shape(call.shape, call.axes, keepdims)
        lse = fill(call, shape, -float("inf"), call.out_dtype)
        if return_sign:
            return lse, xp.zeros(shape, dtype=call.out_dtype, device=call.device)
        return lse
    if call.b is None:
        lse, sign = _lse_unweighted(call, slice_max)
    else:
        lse, sign = _lse_weighted(call, slice_max, return_sign=return_sign)
    lse = round_to(xp, squeeze(xp, lse, call.axes, keepdims), call.out_dtype)
    if not return_sign:
        return lse
    sign = round_to(xp, squeeze(xp, sign, call.axes, keepdims), call.out_dtype)
    return lse, sign


def logsumexp_state(
    call: Call, *, keepdims: bool, slice_max: SliceMax | None = None
) -> tuple[Array, Array]:
    """``(m, rest)`` of each slice for the streaming normaliser (see ``_streaming``).

    ``rest = s'`` where something is left, ``-1`` where nothing is (so that
    ``1 + rest = 0`` is neutral), NaN with NaN; in float32 for half input, else
    in the output dtype (rounded once from float64 where NumPy computes so).
    """
    xp = call.xp
    dtype = compute_dtype(xp, call.out_dtype)  # half: float32
    if call.empty:
        shape = reduced_shape(call.shape, call.axes, keepdims)
        return (
            fill(call, shape, -float("inf"), dtype),
            fill(call, shape, -1.0, dtype),
        )
    sh = _shifted(xp, inputs(call), call.axes, slice_max)
    k, s = log1p_tail(xp, sh, call.axes)
    rest = state_rest(xp, sh, k, s)
    m = squeeze(xp, sh.m, call.axes, keepdims)
    rest = squeeze(xp, rest, call.axes, keepdims)
    if m.dtype != dtype:  # a maximum of x's values is exact in x's dtype
        m, rest = xp.astype(m, dtype), xp.astype(rest, dtype)
    return m, rest


def _lse_unweighted(call: Call, slice_max: SliceMax | None) -> tuple[Array, Array]:
    xp = call.xp
    x = inputs(call)
    sh = _shifted(xp, x, call.axes, slice_max)
    k, s = log1p_tail(xp, sh, call.axes)
    lse = xp.where(xp.isfinite(sh.m), sh.m_safe + xp.log1p(s), sh.m_special)
    # sign: 1 where something is left, 0 where nothing is, NaN with NaN
    sign = poison(xp, sh.m, xp.astype(k > const(xp, 0.0, k), k.dtype))
    return lse, sign


def _lse_weighted(
    call: Call, slice_max: SliceMax | None, *, return_sign: bool
) -> tuple[Array, Array]:
    """log|sum(b * exp(x))| and its sign; ``b == 0`` entries are ignored like masked ones."""
    xp = call.xp
    b = call.b
    assert b is not None
    zero = const(xp, 0.0, b)
    one = const(xp, 1.0, b)
    ninf = const(xp, -float("inf"), b)
    keep = b != zero
    if call.where is not None:
        keep = keep & call.where
    x = call.x
    if dtype_kind(xp, x.dtype) != "real floating":
        x = xp.astype(x, call.compute_dtype)
    x = to_compute(call, xp.where(keep, x, const(xp, -float("inf"), x)))
    b = xp.where(keep, b, zero)
    sh = _shifted(xp, x, call.axes, slice_max)
    is_max = sh.z == zero
    # the largest terms stay out of the sum: total = B + rest, B = their weights
    # b * e, e == 1 exactly there: the value is the weights' sum, and the
    # gradient reaches each tied maximum with its own weight (not through
    # m alone, which autodiff splits evenly between ties)
    big = pairwise_sum(xp, xp.where(is_max, b * sh.e, zero), call.axes)
    rest = pairwise_sum(xp, xp.where(is_max, zero, b * sh.e), call.axes)
    total = big + rest
    big_safe = xp.where(big == zero, one, big)
    ratio = rest / big_safe
    # log1p form while total has B's sign (ratio > -1); plain log|total| otherwise
    near = (big != zero) & (ratio > -one)
    ratio_safe = xp.where(near, ratio, zero)
    log_near = xp.log(xp.abs(big_safe)) + xp.log1p(ratio_safe)
    total_safe = xp.where(total == zero, one, total)
    log_far = xp.where(total == zero, ninf, xp.log(xp.abs(total_safe)))
    log_abs = xp.where(near, log_near, log_far)
    finite_m = xp.isfinite(sh.m)
    pos_inf = sh.m > zero  # +inf maxima, given not finite
    undefined = ~finite_m & pos_inf & (big == zero)  # +inf entries whose weights cancel
    if not return_sign:
        # SciPy's convention: the log of a negative total is NaN
        negative = xp.where(finite_m, total < zero, pos_inf & (big < zero))
        undefined = undefined | negative
    nan = nan_where(xp, undefined, b)
    lse = xp.where(finite_m, sh.m_safe + log_abs, sh.m_special) + nan
    sign = xp.where(
        finite_m,
        xp.sign(total),
        xp.where(pos_inf, xp.sign(big), poison(xp, sh.m, zero)),
    )
    sign = sign + nan_where(xp, ~finite_m & pos_inf & (big == zero), b)
    return lse, sign


def _logsumexp_complex(
    call: Call, *, keepdims: bool, return_sign: bool
) -> Array | tuple[Array, Array]:
    """log(sum(b * exp(x))) for complex ``x`` on the principal branch, as SciPy."""
    xp = call.xp
    if call.empty:
        shape = reduced_shape(call.shape, call.axes, keepdims)
        lse = xp.full(shape, -float("inf"), dtype=call.out_dtype, device=call.device)
        if return_sign:
            return xp.real(lse), xp.zeros(
                shape, dtype=call.out_dtype, device=call.device
            )
        return lse
    x = xp.astype(call.x, call.compute_dtype)
    re = xp.real(x)
    zero_r = const(xp, 0.0, re)
    ninf_r = const(xp, -float("inf"), re)
    keep = xp.ones(call.shape, dtype=xp.bool, device=call.device)
    if call.b is not None:
        keep = call.b != const(xp, 0.0, call.b)
    if call.where is not None:
        keep = keep & call.where
    re = xp.where(keep, re, ninf_r)
    m = reduce(xp.max, re, call.axes)
    finite_m = xp.isfinite(m)
    m_safe = xp.where(finite_m, m, zero_r)
    z = x - xp.astype(m_safe, x.dtype)
    zero_c = const(xp, 0.0, x)
    terms = xp.where(keep, xp.exp(xp.where(keep, z, zero_c)), zero_c)
    if call.b is not None:
        terms = terms * call.b
    s = pairwise_sum(xp, terms, call.axes)
    mag = xp.abs(s)
    mag_safe = xp.where(mag == zero_r, const(xp, 1.0, mag), mag)
    s_safe = xp.where(mag == zero_r, const(xp, 1.0, s), s)
    log_s = xp.where(mag == zero_r, xp.astype(ninf_r, x.dtype), xp.log(s_safe))
    lse = xp.where(finite_m, xp.astype(m_safe, x.dtype) + log_s, xp.astype(m, x.dtype))
    lse = squeeze(xp, lse, call.axes, keepdims)
    if not return_sign:
        return round_to(xp, lse, call.out_dtype)
    sign = s_safe / xp.astype(mag_safe, s.dtype)
    sign = xp.where(mag == zero_r, zero_c, sign)
    sign = squeeze(xp, sign, call.axes, keepdims)
    return xp.real(lse), sign
