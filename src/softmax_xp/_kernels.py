"""The contract's special-value rules, as named kernels every path calls.

The generic core (``_generic``), the streaming normaliser (``_streaming``) and
every fast path (``_fast/*``) build their answers from these; none re-derives
them. Everything here is written against the array API standard, contains no
Python branch on array values (it traces under ``jax.jit`` and leaves Dask
lazy), and never creates a NaN that the input did not carry, even in a branch
that a later ``where`` discards, so gradients stay finite. The contract they
implement is docs/contract.md.

- :func:`inputs`: ``x`` masked, negated for softmin, divided by the
  temperature, in the compute dtype (after :func:`softmax_xp._call.input_rounding`).
- :func:`shift`: the slice maximum ``m`` and ``z = x - m``, slices whose
  maximum is not finite rebuilt so that every row of the contract table
  becomes the finite case (:class:`Shifted`).
- :func:`log1p_tail`: ``(k, s')``, the count of maxima and
  ``s' = (k - 1) + sum_{x_i < m} exp(x_i - m)``: the log1p form of
  Blanchard, Higham & Higham (IMA J. Numer. Anal. 41(4), 2021), so that
  ``logsumexp([0, -40])`` is ``4.248e-18`` rather than 0.
- :func:`poison`, :func:`constant_where_masked`: NaN slices and masked
  entries, selected last; :func:`masked`: ``x`` with a mask of the caller's
  (logsumexp's drops ``b == 0`` too); :func:`log_or_ninf`: the log of a sum
  that is 0 where nothing is left.
- :func:`state_rest`, :func:`merge_states`, :func:`lse_from_state`: the
  ``(m, rest)`` state of a slice, the merge of two, and its log1p finish.
- :func:`round_to`: one rounding to the output dtype, overflow to ``+-inf``.
- :func:`pairwise_sum`, :func:`subtract_max`, :func:`divide`: sums and
  differences whose error and overflow do not depend on the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._call import Call, input_rounding
from ._compat import Array, Namespace, bits, device, dtype_kind

__all__ = [
    "LEAF",
    "Shifted",
    "const",
    "constant_where_masked",
    "divide",
    "fill",
    "inputs",
    "log1p_tail",
    "log_or_ninf",
    "lse_from_state",
    "masked",
    "merge_states",
    "nan_where",
    "overflow_threshold",
    "pairwise_sum",
    "poison",
    "reduce",
    "reduced_shape",
    "round_to",
    "shift",
    "squeeze",
    "state_rest",
    "subtract_max",
    "to_compute",
]


def const(xp: Namespace, value: float, like: Array) -> Array:
    return xp.asarray(value, dtype=like.dtype, device=device(like))


def reduce(fn: Any, a: Array, axes: tuple[int, ...]) -> Array:
    """``fn`` over ``axes`` keeping them; ``axes == ()`` makes every element its own slice."""
    if not axes:
        return a
    return fn(a, axis=axes, keepdims=True)


# Below this many terms along an axis a library's own sum is used as it is.
LEAF = 64


def pairwise_sum(xp: Namespace, a: Array, axes: tuple[int, ...]) -> Array:
    """Sum over ``axes`` keeping them, pairwise along each axis longer than ``LEAF``.

    A library's sum is not always pairwise (NumPy's is only along a contiguous
    axis; down a column it adds one row after another): on columns of 100,000
    float64 values logsumexp was 12 ulp off (bound 2). Halving the axis
    (adding its two halves) until ``LEAF`` terms remain bounds the error by
    ``log2(n / LEAF)`` roundings plus those of a short sum, on every backend.
    """
    if not axes:
        return a
    for ax in axes:
        n = a.shape[ax]
        if not isinstance(n, int):  # a lazy array of unknown length
            continue
        while n > LEAF:
            h = (n + 1) // 2
            pairs = _slice(a, ax, 0, n - h) + _slice(a, ax, h, n)
            if h > n - h:  # odd: the middle term has no partner
                pairs = xp.concat([pairs, _slice(a, ax, h - 1, h)], axis=ax)
            a, n = pairs, h
    return xp.sum(a, axis=axes, keepdims=True)


def _slice(a: Array, ax: int, start: int, stop: int) -> Array:
    return a[(slice(None),) * ax + (slice(start, stop), ...)]


def masked(call: Call, keep: Array | None, fill: float) -> Array:
    """Real ``x`` in the compute dtype, entries outside ``keep`` set to ``fill``.

    Floating input is masked before the cast, so that masked NaNs are never
    touched by an operation (``jax_debug_nans`` checks every result).
    """
    xp, x = call.xp, call.x
    if dtype_kind(xp, x.dtype) != "real floating":  # ints and bools hold no NaN
        x = xp.astype(x, call.compute_dtype)
    if keep is not None:
        x = xp.where(keep, x, const(xp, fill, x))
    return to_compute(call, x)


def to_compute(call: Call, x: Array) -> Array:
    """Floating ``x`` in the compute dtype, rounded first as ``dtype=`` asks (``input_rounding``)."""
    xp = call.xp
    target = input_rounding(call, x.dtype)
    if target is not None:
        x = round_to(xp, x, target)
    return x if x.dtype == call.compute_dtype else xp.astype(x, call.compute_dtype)


def inputs(call: Call, *, negate: bool = False) -> Array:
    """``x`` in the compute dtype, negated for softmin, masked and divided by temperature."""
    xp = call.xp
    x = masked(call, call.where, float("inf") if negate else -float("inf"))
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
        x_safe = xp.where(finite, x, const(xp, 0.0, x))
        if not isinstance(t, float):
            t = xp.where(finite, t, const(xp, 1.0, x))
        x = xp.where(finite, divide(xp, x_safe, t), x)
    return x


def divide(xp: Namespace, x: Array, t: float | Array) -> Array:
    """``x / t`` for finite ``x`` and normal ``t > 0``, ``+-inf`` on overflow, without one.

    Only ``|x| >= 1`` with ``t <= 4`` can overflow. There the quotient is formed
    as ``2 * ((x/2) / t)``: halving is exact, the half rounds to exactly half of
    the rounded quotient (it is at least 1/8, far from subnormal), and that
    quotient overflowed precisely when the half exceeds ``max/2``. Quotients
    beyond ``1.5 max`` are found first, so the half itself cannot overflow.
    """
    zero, one = const(xp, 0.0, x), const(xp, 1.0, x)
    fmax = float(xp.finfo(x.dtype).max)
    inf = const(xp, float("inf"), x)
    if isinstance(t, float):
        t_low = t <= 4.0
        t_capped = min(t, 4.0)
    else:
        four = const(xp, 4.0, x)
        t_low = t <= four
        t_capped = xp.where(t_low, t, four)
    mag = xp.abs(x)
    halve = (mag >= one) & t_low
    # |x| / t > 1.5 max, compared without overflow (t_capped * 0.1875 max <= 0.75 max)
    far = mag * 0.125 > t_capped * (fmax * 0.1875)
    h = xp.where(halve & ~far, x * 0.5, zero) / t
    over = far | (xp.abs(h) > fmax * 0.5)
    signed_inf = xp.where(x < zero, -inf, inf)
    doubled = xp.where(over, signed_inf, 2 * xp.where(over, zero, h))
    return xp.where(halve, doubled, xp.where(halve, zero, x) / t)


@dataclass(frozen=True, slots=True)
class Shifted:
    m: Array  # slice maximum (keepdims); NaN, +inf or -inf where the slice is special
    m_safe: Array  # m where finite, else 0
    m_special: Array  # m where not finite, as a constant that carries no gradient
    z: Array  # x - m, finite or -inf; 0 at the maxima of every slice with something left
    e: Array  # exp(z)


def shift(
    xp: Namespace, x: Array, axes: tuple[int, ...], m: Array | None = None
) -> Shifted:
    """The contract's ``z = x - m`` of every slice, special slices rebuilt.

    ``m`` is each slice's maximum (keepdims), computed here unless given (a
    backend whose maximum can drop a NaN passes its own). Where ``m`` is not
    finite, ``z`` is rebuilt from comparisons: the ``+inf`` entries of a
    ``+inf`` slice become 0 (each then counts 1), everything else ``-inf``;
    NaN slices are poisoned later from ``m`` (:func:`poison`).
    """
    zero = const(xp, 0.0, x)
    ninf = const(xp, -float("inf"), x)
    if m is None:
        m = reduce(xp.max, x, axes)
    finite_m = xp.isfinite(m)
    m_safe = xp.where(finite_m, m, zero)
    m_special = xp.where(m > zero, -ninf, xp.where(m < zero, ninf, m))
    z_finite = subtract_max(xp, x, m_safe)
    # +inf slices: their +inf entries count 1 each, the rest 0; -inf and NaN
    # slices: everything 0 (NaN is restored at the end from m itself).
    z_special = xp.where((x == m) & (m > zero), zero, ninf)
    z = xp.where(finite_m, z_finite, z_special)
    return Shifted(m=m, m_safe=m_safe, m_special=m_special, z=z, e=xp.exp(z))


def subtract_max(xp: Namespace, x: Array, m: Array) -> Array:
    """``x - m`` rounded as IEEE does, ``-inf`` on overflow, without an overflow.

    ``x - m`` can overflow only when ``m`` is large, and NumPy would warn. For
    ``m > 1`` it is formed as ``2 * (x/2 - m/2)``: halving is exact there, so
    ``x/2 - m/2`` rounds to exactly half of the rounded difference, and that
    difference overflowed precisely when the half exceeds ``max/2``.
    """
    zero = const(xp, 0.0, x)
    half = const(xp, 0.5, x)
    halve = m > const(xp, 1.0, m)
    m_halved = xp.where(halve, m, zero)
    h = x * half - m_halved * half
    # a -inf entry keeps its own 2 * h (it is -inf already, nothing overflows),
    # so that it keeps the tangent jax.nn gives it in log_softmax, t - sum(p t)
    over = (h < -(xp.finfo(x.dtype).max * 0.5)) & (x > -float("inf"))
    doubled = xp.where(over, const(xp, -float("inf"), x), 2 * xp.where(over, zero, h))
    return xp.where(halve, doubled, x - xp.where(halve, zero, m))


def log1p_tail(
    xp: Namespace, sh: Shifted, axes: tuple[int, ...]
) -> tuple[Array, Array]:
    """``(k, s')``: count of maxima and the sum of the other terms plus ``k - 1``.

    ``s'`` is 0 where nothing is left (k == 0), so that ``log1p(s')`` is safe.
    """
    zero = const(xp, 0.0, sh.z)
    is_max = sh.z == zero
    k = reduce(xp.sum, xp.astype(is_max, sh.z.dtype), axes)
    rest = pairwise_sum(xp, xp.where(is_max, zero, sh.e), axes)
    s = xp.where(k > zero, rest + (k - 1), zero)
    return k, s


def poison(xp: Namespace, m: Array, out: Array, where: Array | None = None) -> Array:
    """NaN wherever the slice had a NaN, taken from ``m`` itself (no new NaN).

    Masked entries keep their 0 / -inf even in a NaN slice.
    """
    bad = xp.isnan(m) if where is None else xp.isnan(m) & where
    return xp.where(bad, m, out)


def constant_where_masked(
    xp: Namespace, out: Array, where: Array | None, fill: float
) -> Array:
    """``out`` with masked entries replaced by the constant ``fill``, selected last.

    A masked entry's output must not depend on anything: computed, it would be
    ``-inf - log1p(s)`` and pass its cotangent on to the slice's sum.
    """
    if where is None:
        return out
    return xp.where(where, out, const(xp, fill, out))


def fill(call: Call, shape: tuple[Any, ...], value: float, dtype: Any) -> Array:
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


def round_to(xp: Namespace, out: Array, dtype: Any) -> Array:
    """``out`` rounded once to the output dtype.

    Values beyond a narrower dtype's range are set to +-inf before the cast, as
    rounding would, so that NumPy raises no overflow warning for a correct result.
    """
    if out.dtype == dtype:
        return out
    if dtype_kind(xp, out.dtype) in ("bool", "integral") and bits(xp, dtype) < 32:
        # integers reach half precision through float32, which holds their range
        out = xp.astype(out, xp.float32)
    limit = overflow_threshold(xp, dtype)
    own = overflow_threshold(xp, out.dtype)
    # a wider target needs no clamp (and NumPy would warn casting the limit down)
    if (
        limit is not None
        and (own is None or limit < own)
        and dtype_kind(xp, out.dtype) == "real floating"
    ):
        inf = const(xp, float("inf"), out)
        out = xp.where(out >= limit, inf, xp.where(out <= -limit, -inf, out))
    return xp.astype(out, dtype)


def overflow_threshold(xp: Namespace, dtype: Any) -> float | None:
    """The smallest magnitude that rounds to inf in ``dtype`` (max + half an ulp)."""
    try:
        fi = xp.finfo(dtype)
    except Exception:  # noqa: BLE001 - extension dtypes (ml_dtypes) have no finfo here
        return None
    fmax, eps = float(fi.max), float(fi.eps)
    return fmax + fmax * eps / (2.0 * (2.0 - eps))


def squeeze(xp: Namespace, a: Array, axes: tuple[int, ...], keepdims: bool) -> Array:
    if keepdims or not axes:
        return a
    return xp.squeeze(a, axis=axes)


def reduced_shape(
    shape: tuple[Any, ...], axes: tuple[int, ...], keepdims: bool
) -> tuple[Any, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def nan_where(xp: Namespace, cond: Array, like: Array) -> Array:
    """NaN where ``cond``, 0 elsewhere, in ``like``'s dtype and device.

    Selected from a NaN constant: no operation produces the NaN, so NumPy
    warns about nothing.
    """
    nan = const(xp, float("nan"), like)
    return xp.where(cond, nan, const(xp, 0.0, like))


def log_or_ninf(xp: Namespace, s: Array) -> Array:
    """``log(s)`` (principal branch for complex ``s``), ``-inf`` where ``s == 0``.

    A sum that is 0 means nothing was left: its log is ``-inf`` by the
    contract, and ``log(0)`` is never formed (double ``where``), so NumPy warns
    about nothing and gradients stay finite.
    """
    nothing = s == const(xp, 0.0, s)
    s_safe = xp.where(nothing, const(xp, 1.0, s), s)
    return xp.where(nothing, const(xp, -float("inf"), s), xp.log(s_safe))


# ---------------------------------------------------------------------------
# The (max, rest) state of a slice, its merge and its log1p finish


def state_rest(xp: Namespace, sh: Shifted, k: Array, s: Array) -> Array:
    """``rest`` of the ``(m, rest)`` state: ``s'``, ``-1`` where nothing is left, NaN with NaN.

    With ``rest = -1`` where nothing is left, ``1 + rest = 0`` is neutral in
    :func:`merge_states`.
    """
    rest = xp.where(k > const(xp, 0.0, k), s, const(xp, -1.0, s))
    return xp.where(xp.isnan(sh.m), sh.m, rest)


def merge_states(
    xp: Namespace, a: tuple[Array, Array], b: tuple[Array, Array]
) -> tuple[Array, Array]:
    """The ``(m, rest)`` state of two slices' concatenation.

    Commutative and associative up to rounding; ``(-inf, -1)`` is neutral.
    On a tie (two ``+inf`` or two ``-inf`` sides too) the shift is 0: no
    ``inf - inf`` is ever formed, so no NaN reaches a value or a gradient.
    NaN on either side wins.
    """
    (m1, r1), (m2, r2) = a, b
    first = m1 >= m2
    hi = xp.where(first, m1, m2)
    lo = xp.where(first, m2, m1)
    r_hi = xp.where(first, r1, r2)
    r_lo = xp.where(first, r2, r1)
    tie = m1 == m2
    zero = xp.zeros_like(hi)
    # lo - hi, -inf where it overflows (a -max side against a +max one), unwarned
    gap = subtract_max(xp, xp.where(tie, zero, lo), xp.where(tie, zero, hi))
    shift_ = xp.where(tie, zero, gap)
    rest = r_hi + (r_lo + 1) * xp.exp(shift_)
    # m1 >= NaN is False, so only m1's NaN needs a pick
    m = xp.where(xp.isnan(m1), m1, hi)
    rest = xp.where(xp.isnan(m), m, rest)
    return m, rest


def lse_from_state(xp: Namespace, m: Array, rest: Array) -> Array:
    """The log1p finish: ``m + log1p(rest)``; ``+-inf`` and NaN maxima are the answer.

    The finite branch never sees ``log1p(-1)`` (double ``where``), so
    gradients stay finite.
    """
    finite = xp.isfinite(m)
    zero = const(xp, 0.0, m)
    tail = xp.log1p(xp.where(finite, rest, zero))
    return xp.where(finite, xp.where(finite, m, zero) + tail, m)
