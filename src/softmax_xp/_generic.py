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
    log_or_ninf,
    masked,
    nan_where,
    pairwise_sum,
    poison,
    reduce,
    reduced_shape,
    round_to,
    shift,
    squeeze,
    state_rest,
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
    if call.empty:
        return _lse_of_nothing(call, keepdims=keepdims, return_sign=return_sign)
    if dtype_kind(xp, call.compute_dtype) == "complex floating":
        return _logsumexp_complex(call, keepdims=keepdims, return_sign=return_sign)
    if call.b is None:
        lse, sign = _lse_unweighted(call, slice_max)
    else:
        lse, sign = _lse_weighted(call, slice_max, return_sign=return_sign)
    lse = round_to(xp, squeeze(xp, lse, call.axes, keepdims), call.out_dtype)
    if not return_sign:
        return lse
    sign = round_to(xp, squeeze(xp, sign, call.axes, keepdims), call.out_dtype)
    return lse, sign


def _lse_of_nothing(
    call: Call, *, keepdims: bool, return_sign: bool
) -> Array | tuple[Array, Array]:
    """An empty call's logsumexp: ``-inf``, and the sign 0 (complex input: a real ``lse``)."""
    xp = call.xp
    shape = reduced_shape(call.shape, call.axes, keepdims)
    lse = fill(call, shape, -float("inf"), call.out_dtype)
    if not return_sign:
        return lse
    if dtype_kind(xp, call.out_dtype) == "complex floating":
        lse = xp.real(lse)
    return lse, xp.zeros(shape, dtype=call.out_dtype, device=call.device)


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


def _kept(call: Call) -> Array | None:
    """The entries of a logsumexp that take part: unmasked, with ``b != 0``; ``None``: all."""
    xp, b, keep = call.xp, call.b, call.where
    if b is not None:
        nonzero = b != const(xp, 0.0, b)
        keep = nonzero if keep is None else nonzero & keep
    return keep


def _lse_weighted(
    call: Call, slice_max: SliceMax | None, *, return_sign: bool
) -> tuple[Array, Array]:
    """log|sum(b * exp(x))| and its sign; ``b == 0`` entries are ignored like masked ones."""
    xp = call.xp
    assert call.b is not None
    keep = _kept(call)
    zero = const(xp, 0.0, call.b)
    b = xp.where(keep, call.b, zero)
    sh = _shifted(xp, masked(call, keep, -float("inf")), call.axes, slice_max)
    weights_at_max, rest = _weighted_sums(xp, sh, b, call.axes)
    total = weights_at_max + rest
    log_abs = _log_abs_total(xp, weights_at_max, rest)
    finite_m = xp.isfinite(sh.m)
    pos_inf = sh.m > zero  # +inf maxima, given not finite
    # +inf entries whose weights cancel: NaN for lse and sign
    cancelled = ~finite_m & pos_inf & (weights_at_max == zero)
    undefined = cancelled
    if not return_sign:
        # SciPy's convention: the log of a negative total is NaN
        negative = xp.where(finite_m, total < zero, pos_inf & (weights_at_max < zero))
        undefined = undefined | negative
    lse = xp.where(finite_m, sh.m_safe + log_abs, sh.m_special)
    lse = lse + nan_where(xp, undefined, b)
    sign = xp.where(
        finite_m,
        xp.sign(total),
        xp.where(pos_inf, xp.sign(weights_at_max), poison(xp, sh.m, zero)),
    )
    sign = sign + nan_where(xp, cancelled, b)
    return lse, sign


def _weighted_sums(
    xp: Namespace, sh: Shifted, b: Array, axes: tuple[int, ...]
) -> tuple[Array, Array]:
    """``(weights_at_max, rest)``: ``sum(b * exp(z))`` at the slice maxima and elsewhere.

    The largest terms stay out of the sum: there ``e == 1`` exactly, so the
    first is the weights' sum at the maxima, and the gradient reaches each
    tied maximum with its own weight (not through ``m`` alone, which autodiff
    splits evenly between ties).
    """
    zero = const(xp, 0.0, b)
    is_max = sh.z == const(xp, 0.0, sh.z)
    terms = b * sh.e
    weights_at_max = pairwise_sum(xp, xp.where(is_max, terms, zero), axes)
    rest = pairwise_sum(xp, xp.where(is_max, zero, terms), axes)
    return weights_at_max, rest


def _log_abs_total(xp: Namespace, weights_at_max: Array, rest: Array) -> Array:
    """``log|weights_at_max + rest|``, ``-inf`` where the total is 0.

    In the log1p form while the total has the sign of ``weights_at_max``
    (``rest / weights_at_max > -1``); plainly otherwise, where cancellation
    has already cost what the log1p form would keep.
    """
    zero, one = const(xp, 0.0, rest), const(xp, 1.0, rest)
    at_max_safe = xp.where(weights_at_max == zero, one, weights_at_max)
    ratio = rest / at_max_safe
    near = (weights_at_max != zero) & (ratio > -one)
    log_near = xp.log(xp.abs(at_max_safe)) + xp.log1p(xp.where(near, ratio, zero))
    log_far = log_or_ninf(xp, xp.abs(weights_at_max + rest))
    return xp.where(near, log_near, log_far)


def _logsumexp_complex(
    call: Call, *, keepdims: bool, return_sign: bool
) -> Array | tuple[Array, Array]:
    """log(sum(b * exp(x))) for complex ``x`` on the principal branch, as SciPy.

    Shifted by the largest real part; the log1p form is for real input only.
    """
    xp = call.xp
    keep = _kept(call)
    x = xp.astype(call.x, call.compute_dtype)
    re = xp.real(x)
    if keep is not None:
        re = xp.where(keep, re, const(xp, -float("inf"), re))
    m = reduce(xp.max, re, call.axes)
    finite_m = xp.isfinite(m)
    m_safe = xp.astype(xp.where(finite_m, m, const(xp, 0.0, m)), x.dtype)
    z = x - m_safe
    if keep is None:
        terms = xp.exp(z)
    else:
        zero = const(xp, 0.0, x)
        terms = xp.where(keep, xp.exp(xp.where(keep, z, zero)), zero)
    if call.b is not None:
        terms = terms * call.b
    s = pairwise_sum(xp, terms, call.axes)
    lse = xp.where(finite_m, m_safe + log_or_ninf(xp, s), xp.astype(m, x.dtype))
    lse = squeeze(xp, lse, call.axes, keepdims)
    if not return_sign:
        return round_to(xp, lse, call.out_dtype)
    # s / |s|, and 0 where nothing is left
    mag = xp.abs(s)
    nothing = mag == const(xp, 0.0, mag)
    mag_safe = xp.astype(xp.where(nothing, const(xp, 1.0, mag), mag), s.dtype)
    sign = xp.where(nothing, const(xp, 0.0, s), s / mag_safe)
    return xp.real(lse), squeeze(xp, sign, call.axes, keepdims)
