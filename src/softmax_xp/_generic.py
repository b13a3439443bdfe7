"""The reference implementation: array API standard functions only.

This module *defines* the contract of DESIGN.md §2; every fast path must give
its answers. It runs unchanged on array-api-strict, NumPy, PyTorch, JAX, Dask
and CuPy, contains no Python branch on array values (so it traces under
``jax.jit`` and leaves Dask lazy), and never creates a NaN that the input did
not carry, even in a branch that a later ``where`` discards, so gradients stay
finite and ``jax_debug_nans`` stays quiet.

The special values are handled without branching: the slice maximum ``m`` is
replaced by 0 where it is not finite, and the shifted values ``z = x - m`` of
such slices are rebuilt from comparisons (``+inf`` entries of a ``+inf`` slice
become 0, everything else ``-inf``). That one step turns every row of the
contract table into the finite case: k ``+inf`` entries sum to k, a slice with
nothing left sums to 0 (guarded before dividing or taking the log), and a NaN
slice is re-poisoned at the end by selecting its own NaN maximum.

``logsumexp`` and ``log_softmax`` use the log1p form of Blanchard, Higham &
Higham (IMA J. Numer. Anal. 41(4), 2021): the terms equal to the maximum are
kept out of the sum, ``lse = m + log1p(s')`` with
``s' = (k - 1) + sum_{x_i < m} exp(x_i - m)`` for k tied maxima, so that
``logsumexp([0, -40])`` is ``4.248e-18`` rather than 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._compat import Array, Namespace, bits, device, dtype_kind, nan_where
from ._validation import Call, _compute_dtype

__all__ = ["log_softmax", "logsumexp", "logsumexp_state", "softmax"]


def _reduce(fn: Any, a: Array, axes: tuple[int, ...]) -> Array:
    """``fn`` over ``axes`` keeping them; ``axes == ()`` makes every element its own slice."""
    if not axes:
        return a
    return fn(a, axis=axes, keepdims=True)


# Below this many terms along an axis a library's own sum is used as it is.
_LEAF = 64


def _sum(xp: Namespace, a: Array, axes: tuple[int, ...]) -> Array:
    """Sum over ``axes`` keeping them, pairwise along each axis longer than ``_LEAF``.

    A library's sum is not always pairwise (NumPy's is only along a contiguous
    axis; down a column it adds one row after another): on columns of 100,000
    float64 values logsumexp was 12 ulp off (bound 2). Halving the axis
    (adding its two halves) until ``_LEAF`` terms remain bounds the error by
    ``log2(n / _LEAF)`` roundings plus those of a short sum, on every backend.
    """
    if not axes:
        return a
    for ax in axes:
        n = a.shape[ax]
        if not isinstance(n, int):  # a lazy array of unknown length
            continue
        while n > _LEAF:
            h = (n + 1) // 2
            pairs = _slice(a, ax, 0, n - h) + _slice(a, ax, h, n)
            if h > n - h:  # odd: the middle term has no partner
                pairs = xp.concat([pairs, _slice(a, ax, h - 1, h)], axis=ax)
            a, n = pairs, h
    return xp.sum(a, axis=axes, keepdims=True)


def _slice(a: Array, ax: int, start: int, stop: int) -> Array:
    return a[(slice(None),) * ax + (slice(start, stop), ...)]


@dataclass(frozen=True, slots=True)
class _Shifted:
    m: Array  # slice maximum (keepdims); NaN, +inf or -inf where the slice is special
    m_safe: Array  # m where finite, else 0
    m_special: Array  # m where not finite, as a constant that carries no gradient
    z: Array  # x - m, finite or -inf; 0 at the maxima of every slice with something left
    e: Array  # exp(z)


def _const(xp: Namespace, value: float, like: Array) -> Array:
    return xp.asarray(value, dtype=like.dtype, device=device(like))


def _masked(call: Call, fill: float) -> Array:
    """``x`` in the compute dtype with masked entries set to ``fill``.

    Floating input is masked before the cast, so that masked NaNs are never
    touched by an operation (``jax_debug_nans`` checks every result).
    """
    xp, x = call.xp, call.x
    if dtype_kind(xp, x.dtype) != "real floating":  # ints and bools hold no NaN
        x = xp.astype(x, call.compute_dtype)
    if call.where is not None:
        x = xp.where(call.where, x, _const(xp, fill, x))
    return _to_compute(call, x)


def _to_compute(call: Call, x: Array) -> Array:
    """Floating ``x`` in the compute dtype, rounded as ``dtype=`` asks first.

    A narrowing ``dtype=`` rounds ``x`` to it (softmax and log_softmax: half
    outputs too, then widened to float32; logsumexp: to float32), with values beyond its range set to ``+-inf`` as
    IEEE rounding does and without NumPy's overflow warning, even where the
    core then computes wider (float32 logsumexp in float64 on NumPy), so that
    every backend sees the same values.
    """
    xp = call.xp
    out = call.out_dtype
    if call.func.startswith("logsumexp"):
        # a reduction: half outputs round the result once, and its sign is that
        # of the float32 total (DESIGN: return_sign under a narrowing dtype=)
        out = _compute_dtype(xp, out)
    if x.dtype != out and _rounds(xp, x.dtype, out):
        x = _finish(xp, x, out)
    return x if x.dtype == call.compute_dtype else xp.astype(x, call.compute_dtype)


def _rounds(xp: Namespace, src: Any, dst: Any) -> bool:
    """Whether casting real floating ``src`` to ``dst`` can change a value."""
    try:
        a, b = xp.finfo(src), xp.finfo(dst)
    except Exception:  # noqa: BLE001 - extension dtypes (ml_dtypes) have no finfo here
        return bits(xp, dst) <= bits(xp, src)
    return not (float(b.eps) <= float(a.eps) and float(b.max) >= float(a.max))


def _inputs(call: Call, *, negate: bool = False) -> Array:
    """``x`` in the compute dtype, negated for softmin, masked and divided by temperature."""
    xp = call.xp
    x = _masked(call, -float("inf") if not negate else float("inf"))
    if negate:
        x = -x
    t = call.temperature
    if t is not None:
        if not isinstance(t, float):
            t = xp.astype(t, call.compute_dtype)
        # Divide only finite values: t > 0 keeps +-inf and NaN as they are, no
        # 0 * inf reaches the gradient of a traced temperature, and masked
        # temperatures (even 0) are never divided by.
        finite = xp.isfinite(x)
        x_safe = xp.where(finite, x, _const(xp, 0.0, x))
        if not isinstance(t, float):
            t = xp.where(finite, t, _const(xp, 1.0, x))
        x = xp.where(finite, _divide(xp, x_safe, t), x)
    return x


def _divide(xp: Namespace, x: Array, t: float | Array) -> Array:
    """``x / t`` for finite ``x`` and normal ``t > 0``, ``+-inf`` on overflow, without one.

    Only ``|x| >= 1`` with ``t <= 4`` can overflow. There the quotient is formed
    as ``2 * ((x/2) / t)``: halving is exact, the half rounds to exactly half of
    the rounded quotient (it is at least 1/8, far from subnormal), and that
    quotient overflowed precisely when the half exceeds ``max/2``. Quotients
    beyond ``1.5 max`` are found first, so the half itself cannot overflow.
    """
    zero, one = _const(xp, 0.0, x), _const(xp, 1.0, x)
    fmax = float(xp.finfo(x.dtype).max)
    inf = _const(xp, float("inf"), x)
    if isinstance(t, float):
        t_low = t <= 4.0
        t_c = min(t, 4.0)
    else:
        four = _const(xp, 4.0, x)
        t_low = t <= four
        t_c = xp.where(t_low, t, four)
    mag = xp.abs(x)
    halve = (mag >= one) & t_low
    # |x| / t > 1.5 max, compared without overflow (t_c * 0.1875 max <= 0.75 max)
    far = mag * 0.125 > t_c * (fmax * 0.1875)
    h = xp.where(halve & ~far, x * 0.5, zero) / t
    over = far | (xp.abs(h) > fmax * 0.5)
    signed_inf = xp.where(x < zero, -inf, inf)
    doubled = xp.where(over, signed_inf, 2 * xp.where(over, zero, h))
    return xp.where(halve, doubled, xp.where(halve, zero, x) / t)


def _shift(xp: Namespace, x: Array, axes: tuple[int, ...]) -> _Shifted:
    zero = _const(xp, 0.0, x)
    ninf = _const(xp, -float("inf"), x)
    m = _reduce(xp.max, x, axes)
    # a maximum taken across devices can drop a NaN (XLA:CPU's all-reduce does
    # on a sharded JAX array); a sum cannot: NaN slices get their NaN back
    m = m + _reduce(xp.sum, xp.where(xp.isnan(x), x, zero), axes)
    finite_m = xp.isfinite(m)
    m_safe = xp.where(finite_m, m, zero)
    m_special = xp.where(m > zero, -ninf, xp.where(m < zero, ninf, m))
    z_finite = _subtract_max(xp, x, m_safe)
    # +inf slices: their +inf entries count 1 each, the rest 0; -inf and NaN
    # slices: everything 0 (NaN is restored at the end from m itself).
    z_special = xp.where((x == m) & (m > zero), zero, ninf)
    z = xp.where(finite_m, z_finite, z_special)
    return _Shifted(m=m, m_safe=m_safe, m_special=m_special, z=z, e=xp.exp(z))


def _subtract_max(xp: Namespace, x: Array, m: Array) -> Array:
    """``x - m`` rounded as IEEE does, ``-inf`` on overflow, without an overflow.

    ``x - m`` can overflow only when ``m`` is large, and NumPy would warn. For
    ``m > 1`` it is formed as ``2 * (x/2 - m/2)``: halving is exact there, so
    ``x/2 - m/2`` rounds to exactly half of the rounded difference, and that
    difference overflowed precisely when the half exceeds ``max/2``.
    """
    zero = _const(xp, 0.0, x)
    half = _const(xp, 0.5, x)
    big = m > _const(xp, 1.0, m)
    m_big = xp.where(big, m, zero)
    h = x * half - m_big * half
    # a -inf entry keeps its own 2 * h (it is -inf already, nothing overflows),
    # so that it keeps the tangent jax.nn gives it in log_softmax, t - sum(p t)
    over = (h < -(xp.finfo(x.dtype).max * 0.5)) & (x > -float("inf"))
    doubled = xp.where(over, _const(xp, -float("inf"), x), 2 * xp.where(over, zero, h))
    return xp.where(big, doubled, x - xp.where(big, zero, m))


def _log1p_tail(
    xp: Namespace, sh: _Shifted, axes: tuple[int, ...]
) -> tuple[Array, Array]:
    """``(k, s')``: count of maxima and the sum of the other terms plus ``k - 1``.

    ``s'`` is 0 where nothing is left (k == 0), so that ``log1p(s')`` is safe.
    """
    zero = _const(xp, 0.0, sh.z)
    is_max = sh.z == zero
    k = _reduce(xp.sum, xp.astype(is_max, sh.z.dtype), axes)
    rest = _sum(xp, xp.where(is_max, zero, sh.e), axes)
    s = xp.where(k > zero, rest + (k - 1), zero)
    return k, s


def _poison(xp: Namespace, m: Array, out: Array, where: Array | None = None) -> Array:
    """NaN wherever the slice had a NaN, taken from ``m`` itself (no new NaN).

    Masked entries keep their 0 / -inf even in a NaN slice.
    """
    bad = xp.isnan(m) if where is None else xp.isnan(m) & where
    return xp.where(bad, m, out)


def _constant_where_masked(
    xp: Namespace, out: Array, where: Array | None, fill: float
) -> Array:
    """``out`` with masked entries replaced by the constant ``fill``, selected last.

    A masked entry's output must not depend on anything: computed, it would be
    ``-inf - log1p(s)`` and pass its cotangent on to the slice's sum.
    """
    if where is None:
        return out
    return xp.where(where, out, _const(xp, fill, out))


def _fill(call: Call, shape: tuple[Any, ...], value: float, dtype: Any) -> Array:
    """The result of an empty call: ``value`` everywhere, still a function of the inputs.

    An exact 0 taken from ``x`` (and array temperatures or weights) is added,
    so that autograd stays attached (``requires_grad`` as the peers give it)
    and the gradient is 0; the sums of empty arrays cost nothing.
    """
    xp = call.xp
    out = xp.full(shape, value, dtype=dtype, device=call.device)
    for a in (call.x, call.temperature, call.b):
        # only arrays that record a graph (torch's requires_grad): adding to
        # the fill would make a JAX result lose x's sharding
        if a is None or isinstance(a, float) or not getattr(a, "requires_grad", False):
            continue
        if dtype_kind(xp, a.dtype) in (None, "bool", "integral"):
            continue  # no gradient to keep
        if a.dtype != dtype and dtype_kind(xp, a.dtype) != dtype_kind(xp, dtype):
            continue  # complex weights of a real result: nothing to tie
        # broadcast to the (empty) call shape: no element is ever read
        out = out + xp.astype(xp.sum(xp.broadcast_to(a, call.shape)), dtype) * 0
    return out


def _finish(xp: Namespace, out: Array, dtype: Any) -> Array:
    """``out`` rounded once to the output dtype.

    Values beyond a narrower dtype's range are set to +-inf before the cast, as
    rounding would, so that NumPy raises no overflow warning for a correct result.
    """
    if out.dtype == dtype:
        return out
    if dtype_kind(xp, out.dtype) in ("bool", "integral") and bits(xp, dtype) < 32:
        # integers reach half precision through float32, which holds their range
        out = xp.astype(out, xp.float32)
    limit = _overflow_threshold(xp, dtype)
    own = _overflow_threshold(xp, out.dtype)
    # a wider target needs no clamp (and NumPy would warn casting the limit down)
    if (
        limit is not None
        and (own is None or limit < own)
        and dtype_kind(xp, out.dtype) == "real floating"
    ):
        inf = _const(xp, float("inf"), out)
        out = xp.where(out >= limit, inf, xp.where(out <= -limit, -inf, out))
    return xp.astype(out, dtype)


def _overflow_threshold(xp: Namespace, dtype: Any) -> float | None:
    """The smallest magnitude that rounds to inf in ``dtype`` (max + half an ulp)."""
    try:
        fi = xp.finfo(dtype)
    except Exception:  # noqa: BLE001 - extension dtypes (ml_dtypes) have no finfo here
        return None
    fmax, eps = float(fi.max), float(fi.eps)
    return fmax + fmax * eps / (2.0 * (2.0 - eps))


def _squeeze(xp: Namespace, a: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    if keepdims or not axes:
        return a
    return xp.squeeze(a, axis=axes)


def softmax(call: Call, *, negate: bool = False) -> Array:
    xp = call.xp
    if call.empty:
        return _fill(call, call.shape, 0.0, call.out_dtype)
    x = _inputs(call, negate=negate)
    sh = _shift(xp, x, call.axes)
    # the sum as 1 + s', the maxima kept out of it (as in the log1p form): a
    # large term would otherwise swallow the low bits of every small one added
    # to it; nothing left has s' = 0, so the division is by 1
    _, s = _log1p_tail(xp, sh, call.axes)
    out = _poison(xp, sh.m, sh.e / (1 + s), call.where)
    out = _constant_where_masked(xp, out, call.where, 0.0)
    return _finish(xp, out, call.out_dtype)


def log_softmax(call: Call, *, negate: bool = False) -> Array:
    xp = call.xp
    if call.empty:
        return _fill(call, call.shape, -float("inf"), call.out_dtype)
    x = _inputs(call, negate=negate)
    sh = _shift(xp, x, call.axes)
    _, s = _log1p_tail(xp, sh, call.axes)
    out = _poison(xp, sh.m, sh.z - xp.log1p(s), call.where)
    out = _constant_where_masked(xp, out, call.where, -float("inf"))
    return _finish(xp, out, call.out_dtype)


def logsumexp(
    call: Call, *, keepdims: bool, return_sign: bool
) -> Array | tuple[Array, Array]:
    xp = call.xp
    if dtype_kind(xp, call.compute_dtype) == "complex floating":
        return _logsumexp_complex(call, keepdims=keepdims, return_sign=return_sign)
    if call.empty:
        shape = _reduced_shape(call.shape, call.axes, keepdims)
        lse = _fill(call, shape, -float("inf"), call.out_dtype)
        if return_sign:
            return lse, xp.zeros(shape, dtype=call.out_dtype, device=call.device)
        return lse
    if call.b is None:
        lse, sign = _lse_unweighted(call)
    else:
        lse, sign = _lse_weighted(call, return_sign=return_sign)
    lse = _finish(xp, _squeeze(xp, lse, call.axes, keepdims), call.out_dtype)
    if not return_sign:
        return lse
    sign = _finish(xp, _squeeze(xp, sign, call.axes, keepdims), call.out_dtype)
    return lse, sign


def logsumexp_state(call: Call, *, keepdims: bool) -> tuple[Array, Array]:
    """``(m, rest)`` of each slice for the streaming normaliser (see ``_streaming``).

    ``rest = s'`` where something is left, ``-1`` where nothing is (so that
    ``1 + rest = 0`` is neutral), NaN with NaN; in float32 for half input, else
    in the output dtype (rounded once from float64 where NumPy computes so).
    """
    xp = call.xp
    dtype = _compute_dtype(xp, call.out_dtype)  # half: float32
    if call.empty:
        shape = _reduced_shape(call.shape, call.axes, keepdims)
        return (
            _fill(call, shape, -float("inf"), dtype),
            _fill(call, shape, -1.0, dtype),
        )
    sh = _shift(xp, _inputs(call), call.axes)
    k, s = _log1p_tail(xp, sh, call.axes)
    rest = xp.where(k > _const(xp, 0.0, k), s, _const(xp, -1.0, s))
    rest = xp.where(xp.isnan(sh.m), sh.m, rest)
    m = _squeeze(xp, sh.m, call.axes, keepdims)
    rest = _squeeze(xp, rest, call.axes, keepdims)
    if m.dtype != dtype:  # a maximum of x's values is exact in x's dtype
        m, rest = xp.astype(m, dtype), xp.astype(rest, dtype)
    return m, rest


def _lse_unweighted(call: Call) -> tuple[Array, Array]:
    xp = call.xp
    x = _inputs(call)
    sh = _shift(xp, x, call.axes)
    k, s = _log1p_tail(xp, sh, call.axes)
    lse = xp.where(xp.isfinite(sh.m), sh.m_safe + xp.log1p(s), sh.m_special)
    # sign: 1 where something is left, 0 where nothing is, NaN with NaN
    sign = _poison(xp, sh.m, xp.astype(k > _const(xp, 0.0, k), k.dtype))
    return lse, sign


def _lse_weighted(call: Call, *, return_sign: bool) -> tuple[Array, Array]:
    """log|sum(b * exp(x))| and its sign; ``b == 0`` entries are ignored like masked ones."""
    xp = call.xp
    b = call.b
    assert b is not None
    zero = _const(xp, 0.0, b)
    one = _const(xp, 1.0, b)
    ninf = _const(xp, -float("inf"), b)
    keep = b != zero
    if call.where is not None:
        keep = keep & call.where
    x = call.x
    if dtype_kind(xp, x.dtype) != "real floating":
        x = xp.astype(x, call.compute_dtype)
    x = _to_compute(call, xp.where(keep, x, _const(xp, -float("inf"), x)))
    b = xp.where(keep, b, zero)
    sh = _shift(xp, x, call.axes)
    is_max = sh.z == zero
    # the largest terms stay out of the sum: total = B + rest, B = their weights
    # b * e, e == 1 exactly there: the value is the weights' sum, and the
    # gradient reaches each tied maximum with its own weight (not through
    # m alone, which autodiff splits evenly between ties)
    big = _sum(xp, xp.where(is_max, b * sh.e, zero), call.axes)
    rest = _sum(xp, xp.where(is_max, zero, b * sh.e), call.axes)
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
        xp.where(pos_inf, xp.sign(big), _poison(xp, sh.m, zero)),
    )
    sign = sign + nan_where(xp, ~finite_m & pos_inf & (big == zero), b)
    return lse, sign


def _logsumexp_complex(
    call: Call, *, keepdims: bool, return_sign: bool
) -> Array | tuple[Array, Array]:
    """log(sum(b * exp(x))) for complex ``x`` on the principal branch, as SciPy."""
    xp = call.xp
    if call.empty:
        shape = _reduced_shape(call.shape, call.axes, keepdims)
        lse = xp.full(shape, -float("inf"), dtype=call.out_dtype, device=call.device)
        if return_sign:
            return xp.real(lse), xp.zeros(
                shape, dtype=call.out_dtype, device=call.device
            )
        return lse
    x = xp.astype(call.x, call.compute_dtype)
    re = xp.real(x)
    zero_r = _const(xp, 0.0, re)
    ninf_r = _const(xp, -float("inf"), re)
    keep = xp.ones(call.shape, dtype=xp.bool, device=call.device)
    if call.b is not None:
        keep = call.b != _const(xp, 0.0, call.b)
    if call.where is not None:
        keep = keep & call.where
    re = xp.where(keep, re, ninf_r)
    m = _reduce(xp.max, re, call.axes)
    finite_m = xp.isfinite(m)
    m_safe = xp.where(finite_m, m, zero_r)
    z = x - xp.astype(m_safe, x.dtype)
    zero_c = _const(xp, 0.0, x)
    terms = xp.where(keep, xp.exp(xp.where(keep, z, zero_c)), zero_c)
    if call.b is not None:
        terms = terms * call.b
    s = _sum(xp, terms, call.axes)
    mag = xp.abs(s)
    mag_safe = xp.where(mag == zero_r, _const(xp, 1.0, mag), mag)
    s_safe = xp.where(mag == zero_r, _const(xp, 1.0, s), s)
    log_s = xp.where(mag == zero_r, xp.astype(ninf_r, x.dtype), xp.log(s_safe))
    lse = xp.where(finite_m, xp.astype(m_safe, x.dtype) + log_s, xp.astype(m, x.dtype))
    lse = _squeeze(xp, lse, call.axes, keepdims)
    if not return_sign:
        return _finish(xp, lse, call.out_dtype)
    sign = s_safe / xp.astype(mag_safe, s.dtype)
    sign = xp.where(mag == zero_r, zero_c, sign)
    sign = _squeeze(xp, sign, call.axes, keepdims)
    return xp.real(lse), sign


def _reduced_shape(
    shape: tuple[Any, ...], axes: tuple[int, ...], keepdims: bool
) -> tuple[Any, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)
