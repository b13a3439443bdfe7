"""JAX: one compiled function per static configuration, with ``custom_jvp`` rules.

Compiling. Eagerly, every array operation is dispatched (and, for a new shape,
compiled) one at a time; wrapping the whole computation in ``jax.jit`` per
static configuration (kind, axes, shape, dtypes, which options are present)
turns a call into one dispatch. Inside a caller's ``jit`` the inner ``jit`` is
inlined. The jitted function of a configuration is kept in a dictionary
keyed on the Call's static fields, read one by one, and takes only the arrays
the call has (no ``None`` arguments): a repeated small call costs about a
microsecond more than calling the jitted function itself. ``run_generic`` is
the generic core compiled that way, with JAX's own autodiff and a
NaN-carrying slice maximum (:func:`_nan_carrying_max`); it is what
:func:`softmax_xp.force_generic` runs on JAX. ``run`` is the fast path
below, and runs ``run_generic`` for what it does not cover (weights ``b``,
complex logsumexp, ``axis=()``, empty input).

Around the core everything is a shared kernel (``inputs``, ``poison``,
``constant_where_masked``, ``round_to``, ``squeeze``) except the division by a
Python-float temperature, a plain ``u / t``: for ``t > 0`` that is
``kernels.divide``'s answer, and its selects would split the fusion below.

One fusion. XLA:CPU hands ``reduce-max, subtract, exp, reduce-sum, divide``
to one fusion that reads each row once, but a ``select``, a comparison or a
``clamp`` in the chain splits it into several passes. The shared ``shift``,
``log1p_tail`` and ``lse_from_state`` are made of selects and comparisons, so
the core stays JAX-specific. Measured (docs/performance.md): jitted softmax,
log_softmax and logsumexp on 4096x4096 float32, forward and gradient, medians
interleaved, as ratios to ``jit(jax.nn.*)``: with the shared kernels in the
core each takes more than 10% longer (the forwards 2x to 4x this core's time),
except softmax's gradient. Here the contract's special values (docs/contract.md) are handled
with ``min``, ``max``, ``floor`` and exact arithmetic only, and every row
still gets the generic answer. Nothing relies on what XLA does not
promise: it assumes a reduction's initial value is the identity (and drops it
on length-1 axes), folds a caller's ``x * 4`` into a later scaling, and
contracts a multiply and a subtraction into an FMA (which revives the finite
value whose overflow made a ``+inf``):

- ``m = max(reduce_max(u), -max_float)``: the reduction starts from ``-inf``,
  and an all ``-inf`` row gets a finite stand-in after it (``maximum`` keeps NaN).
- ``c = min(m, max_float)`` (written ``-max(-m, -max_float)``: a ``min`` of a
  ``max`` becomes a ``clamp``), ``d = min(m - c, max_float)``: 0 on rows with a
  finite maximum, ``max_float`` on ``+inf`` rows.
- ``z = min(min(u, m) - c - d - d, 0)``; the first ``min`` changes no value but
  rounds ``u`` before any arithmetic (no FMA, no folded scaling). On a finite
  row this is ``u - m`` rounded as IEEE does, ``-inf`` on overflow (the shared
  ``subtract_max``). On a ``+inf`` row ``+inf`` entries get ``z = 0`` and every
  finite one (``max_float`` included) lies three float ranges below: ``-inf``.
  On an all ``-inf`` row every ``z`` is ``-inf``; NaN rows stay NaN, even where
  a sharded maximum dropped the NaN (``u - m`` carries it into every sum).
- softmax is ``exp(z) / max(S, 1)``: a row with something left sums to at
  least 1 (its maxima count 1 each), a row with nothing left to 0. (A ``z`` with one
  ``- d`` fewer has the same exponential, but sharing a prefix with
  log_softmax's ``z`` in a gradient makes XLA write it to memory: 1.4x.)
- The log1p form keeps the maxima out of the sum: ``floor(e)`` is 1 exactly
  where ``e = exp(z)`` is 1 (an entry so close to the maximum that its
  exponential rounds to 1 adds 1 whether it counts as a maximum or not), so
  ``s' = sum(e - floor(e)) + (sum(floor(e)) - 1)``; log_softmax is
  ``z - log1p(max(s', 0))``, in one fusion with its output pass.
- logsumexp is ``m + log1p(s')`` (``log1p(-1) = -inf`` where nothing is left;
  the shared ``lse_from_state``, whose selects guard a non-finite ``m``,
  measured several times slower in the forward), with ``s' = S - 1`` of one
  plain sum, and ``z = min(u, m) - c`` (a ``+inf`` row sums to ``+inf``, which
  is its answer); two sums in one pass cost XLA:CPU 1.5x (last axis) to 6x
  (first axis) ``jax.nn.logsumexp``'s time. ``S - 1`` loses the low bits of
  a small ``s'``; where that shows in the result, a ``lax.cond`` runs a second
  pass for ``sum(e - floor(e))`` (:func:`_log1p_arg`).

Gradients. ``custom_jvp`` on the core, a function of the masked, negated and
tempered input ``u``: masking and temperature stay under JAX's own autodiff
(cheap selects and a division; a traced temperature keeps its gradient). With
``p`` the softmax and ``t`` the tangent of ``u``: softmax ``p (t - sum(p t))``,
log_softmax ``t - sum(p t)``, logsumexp ``sum(p t)``, on rows with a finite
maximum and something left; elsewhere (``+inf`` entries, nothing left) the
output is constant in ``u`` and the tangent 0, the flags computed without a
comparison so that a gradient is one fusion too. At a ``-inf`` output of
log_softmax the tangent is ``t - sum(p t)``, as for ``jax.nn.log_softmax``;
a loss gives such outputs a zero cotangent. The rules compute their outputs
with the custom functions themselves, so second derivatives (``jax.hessian``)
go through them again. They create no NaN (``jax_debug_nans`` stays quiet);
NaN rows, whose outputs are NaN, get NaN tangents.

GPU kernels (issue 14), off by default. With ``SOFTMAX_XP_PALLAS=1`` in the
environment when this module is imported, a configuration that
``jax_pallas.py`` covers runs its Pallas (Triton) kernel on CUDA devices,
chosen when the jitted function is lowered (``lax.platform_dependent``; every
other platform keeps the fused core above); what it does not cover runs as
without the switch. It stays off until a GPU benchmark shows it faster than
XLA's fusion. ``_PALLAS = "interpret"`` (private, for the tests) runs the
kernels in Pallas's interpret mode on any platform.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import _generic
from .. import _kernels as kernels
from .._call import Call
from .._compat import dtype_kind

__all__ = ["run", "run_generic"]

Axes = tuple[int, ...]

# ---------------------------------------------------------------------------
# The core: arithmetic only, so that XLA keeps it in one fusion. ``jnp`` is
# the namespace the shared kernels get (what ``array_namespace`` gives JAX).


def _slice_max(u: Any, axes: Axes) -> Any:
    """The slice maximum (keepdims), ``-max_float`` on a slice with nothing left."""
    # from -inf, the identity: XLA may drop any other initial value (length-1 axes)
    return jnp.maximum(jnp.max(u, axis=axes, keepdims=True), -_big(u))


def _offsets(m: Any) -> tuple[Any, Any]:
    """``(c, d)``: ``c = min(m, max_float)``; ``d`` 0 on rows with a finite maximum, ``max_float`` on ``+inf`` rows."""
    big = _big(m)
    c = -jnp.maximum(-m, -big)  # min(m, big), which XLA would turn into a clamp
    return c, jnp.minimum(m - c, big)


def _shift(u: Any, m: Any) -> Any:
    """``z = u - m``, with the special values of the module docstring."""
    c, d = _offsets(m)
    # min(u, m) is u, rounded: no caller's `x * 4` becomes an FMA with `- c`
    return jnp.minimum(jnp.minimum(u, m) - c - d - d, 0.0)


def _lse_shift(u: Any, m: Any) -> Any:
    """A ``z`` for logsumexp's sum: ``min(u, m) - min(m, max_float)``.

    On a ``+inf`` row the sum is ``+inf`` (``S - 1`` too), and so is
    ``m + log1p(S - 1)``: logsumexp needs no other care for those rows.
    """
    return jnp.minimum(u, m) - _offsets(m)[0]


def _big(u: Any) -> float:
    return float(np.finfo(u.dtype).max)


def _shifted(u: Any, axes: Axes) -> tuple[Any, Any]:
    """``(m, z)``: the slice maximum (keepdims; ``-max_float`` for nothing left) and ``u - m``."""
    m = _slice_max(u, axes)
    return m, _shift(u, m)


def _log1p_arg(u: Any, m: Any, axes: Axes) -> Any:
    """logsumexp's ``s' = S - 1`` of ``S = sum(exp(z))``, or ``rest + (k - 1)`` where that is needed.

    ``S - 1`` is one reduction, as in ``jax.nn``, and exact given ``S``; but
    ``S`` has rounded away the low bits of the terms other than the maximum
    (``1 + 4e-18`` is 1). That matters only on slices with ``1 <= S < 2``
    (where ``S >= 2``, ``s' >= 1`` keeps ``S``'s relative accuracy; ``S = 0``
    on a slice with nothing left, where ``s' = -1`` is exact) and ``|m| < 8``
    (elsewhere the error, at most about ``ulp(1) / 2``, is below
    ``ulp(m) / 8`` in ``m + log1p(s')``). If any slice needs it, the other
    branch of a ``lax.cond`` (not a Python branch) sums ``rest``, the terms
    ``e < 1`` (``e - floor(e)``: ``floor(e)`` is 1 exactly where ``e`` is), for
    those slices, where only the maximum has ``e == 1`` (``k = 1``). Both sums
    in one pass made XLA:CPU's fused reduction 1.5x to 6x slower than
    ``jax.nn.logsumexp``; the second pass runs only where it is needed.
    """
    total = jnp.sum(jnp.exp(_lse_shift(u, m)), axis=axes, keepdims=True)
    # NaN slices: False (S - 1 is NaN); +inf slices: S = +inf, False
    near = (total >= 1.0) & (total < 2.0) & (jnp.abs(m) < 8.0)

    def exact(_: Any) -> Any:
        # from u again: a z from outside the branch would be kept in memory
        e = jnp.exp(_lse_shift(u, m))
        rest = jnp.sum(e - jnp.floor(e), axis=axes, keepdims=True)
        return jnp.where(near, rest, total - 1.0)

    return lax.cond(jnp.any(near), exact, lambda _: total - 1.0, None)


def _flags(u: Any, axes: Axes) -> tuple[Any, Any]:
    """``(finite, live)``: 1 on slices with a finite maximum (and something left), else 0.

    Constants of ``u``: they only change where the output is not smooth. With
    ``m / 4 <= max_float / 4`` on a slice that has no ``+inf``, the ``min`` is 0
    there and -inf on a ``+inf`` slice; no comparison, so that XLA keeps the
    gradient in one fusion (NaN slices give NaN).
    """
    v = lax.stop_gradient(u)
    m = _slice_max(v, axes)
    z = _shift(v, m)
    finite = jnp.exp(jnp.minimum(float(np.finfo(m.dtype).max) - m * 0.25, 0.0))
    s = jnp.sum(jnp.exp(z), axis=axes, keepdims=True)  # >= 1, or 0: nothing left
    return finite, jnp.minimum(s, 1.0) * finite


def _softmax_primal(u: Any, axes: Axes) -> Any:
    e = jnp.exp(_shift(u, _slice_max(u, axes)))
    return e / jnp.maximum(jnp.sum(e, axis=axes, keepdims=True), 1.0)


def _log_softmax_primal(u: Any, axes: Axes) -> Any:
    # one fusion with its output pass: a lax.cond around s' (logsumexp's
    # _log1p_finish) splits it, measured 1.1x-1.2x slower than both sums here
    m = _slice_max(u, axes)
    z = _shift(u, m)
    e = jnp.exp(z)
    ones = jnp.floor(e)  # 1 exactly where e == 1 (e lies in [0, 1])
    rest = jnp.sum(e - ones, axis=axes, keepdims=True)
    s = rest + (jnp.sum(ones, axis=axes, keepdims=True) - 1.0)
    return z - jnp.log1p(jnp.maximum(s, 0.0))


# Below this many elements (a static choice, by shape) logsumexp keeps both
# sums in one pass: there the lax.cond costs more (8x128 float32: 1.03x
# against 0.94x jax.nn's time) than the second sum. So does a process with
# more than one device (a static choice too): the cond's ``any`` over an
# array sharded along a kept axis would be a collective on every call, where
# the one-pass form reduces each shard on its own.
_ONE_PASS_UP_TO = 1 << 16


def _logsumexp_primal(u: Any, axes: Axes) -> Any:
    m = _slice_max(u, axes)
    if u.size <= _ONE_PASS_UP_TO or jax.device_count() > 1:
        e = jnp.exp(_shift(u, m))
        ones = jnp.floor(e)  # 1 exactly where e == 1 (e lies in [0, 1])
        rest = jnp.sum(e - ones, axis=axes, keepdims=True)
        s = rest + (jnp.sum(ones, axis=axes, keepdims=True) - 1.0)
    else:
        s = _log1p_arg(u, m, axes)
    # log1p(-1) = -inf where nothing is left (m is -max_float there)
    return m + jnp.log1p(s)


def _dot(p: Any, t: Any, axes: Axes) -> Any:
    return jnp.sum(p * t, axis=axes, keepdims=True)


def _with_rule(primal: Callable[..., Any], tangent: Callable[..., Any]) -> Any:
    """``primal`` under ``custom_jvp``, its tangent ``tangent(t, p, live, axes)``.

    ``p`` is the softmax on slices with a finite maximum, else 0; ``live`` as
    in :func:`_flags`. The rule computes the output with the custom function
    itself, so that a second derivative (``jax.hessian``) goes through the
    rules again instead of differentiating the non-differentiable ``reduce``.
    """
    fn = jax.custom_jvp(primal, nondiff_argnums=(1,))

    def jvp(axes: Axes, primals: Any, tangents: Any) -> tuple[Any, Any]:
        (u,), (t,) = primals, tangents
        finite, live = _flags(u, axes)
        return fn(u, axes), tangent(t, _softmax(u, axes) * finite, live, axes)

    fn.defjvp(jvp)
    return fn


# +inf slices are constant in u; slices with nothing left have p = 0 already
_softmax = _with_rule(_softmax_primal, lambda t, p, _, ax: p * (t - _dot(p, t, ax)))
_log_softmax = _with_rule(
    _log_softmax_primal, lambda t, p, live, ax: live * t - _dot(p, t, ax)
)
_logsumexp = _with_rule(_logsumexp_primal, lambda t, p, _, ax: _dot(p, t, ax))


# ---------------------------------------------------------------------------
# Inputs and outputs around the core: the shared kernels


def _input(call: Call, negate: bool, *, plain: bool) -> Any:
    """``u``: :func:`kernels.inputs`; a Python-float temperature a plain division."""
    if not plain or call.temperature is None:
        return kernels.inputs(call, negate=negate)
    # a positive scalar: dividing +-inf and NaN as well changes nothing
    untempered = dataclasses.replace(call, temperature=None)
    return kernels.inputs(untempered, negate=negate) / call.temperature


def _fast_normalised(
    call: Call, *, plain: bool, core: Any, fill: float, negate: bool = False
) -> Any:
    """softmax (``fill = 0``) or log_softmax (``-inf``): masked entries ``fill``, even in a NaN row."""
    out = core(_input(call, negate, plain=plain), call.axes)
    out = kernels.constant_where_masked(call.xp, out, call.where, fill)
    return kernels.round_to(call.xp, out, call.out_dtype)


def _fast_logsumexp(
    call: Call, *, plain: bool, keepdims: bool, return_sign: bool
) -> Any:
    xp = call.xp
    lse = _logsumexp(_input(call, False, plain=plain), call.axes)
    lse = kernels.squeeze(xp, lse, call.axes, keepdims)
    out = kernels.round_to(xp, lse, call.out_dtype)
    if not return_sign:
        return out
    # 1 where something is left (finite or +inf), 0 where nothing is, NaN with
    # NaN; read before rounding: a total that rounds to 0 in a narrower dtype= was left
    v = lax.stop_gradient(lse)
    sign = kernels.poison(xp, v, xp.astype(v > -float("inf"), v.dtype))
    return out, xp.astype(sign, out.dtype)


_FAST: dict[str, Callable[..., Any]] = {
    "softmax": functools.partial(_fast_normalised, core=_softmax, fill=0.0),
    "log_softmax": functools.partial(
        _fast_normalised, core=_log_softmax, fill=-float("inf")
    ),
    "logsumexp": _fast_logsumexp,
}


# ---------------------------------------------------------------------------
# Compilation per static configuration


def _nan_carrying_max(xp: Any, x: Any, axes: Axes) -> Any:
    """Each slice's maximum (keepdims), NaN wherever the slice holds one.

    A maximum taken across devices can drop a NaN (XLA:CPU's all-reduce does
    on a sharded array); a sum cannot, so the slice's NaNs are added to it.
    """
    zero = kernels.const(xp, 0.0, x)
    nans = kernels.reduce(xp.sum, xp.where(xp.isnan(x), x, zero), axes)
    return kernels.reduce(xp.max, x, axes) + nans


def _jitted(kind: str, call: Call, opts: dict[str, Any], fast: bool) -> Any:
    """The jitted kernel for ``call``'s configuration; it takes the arrays given.

    Its arguments are ``x`` followed by those of ``where``, ``temperature`` and
    ``b`` that the call has, in that order: only arrays (and a Python float
    temperature), no ``None``, so that JAX's C++ dispatch handles the call.
    """
    options = dict(opts)
    if fast:
        # plain: no mask and no array temperature, the input needs no select
        options["plain"] = call.where is None and not _is_array(call.temperature)
        kernel = _FAST[kind]
    else:
        kernel = getattr(_generic, kind)
        options["slice_max"] = _nan_carrying_max
    given = (call.where is not None, call.temperature is not None, call.b is not None)
    scalar = isinstance(call.temperature, float)
    # the arrays leave the closure; everything else in Call is static
    static = dataclasses.replace(
        call, x=None, where=None, temperature=None, b=None, device=None
    )
    compute = call.compute_dtype

    def run(x: Any, *arrays: Any) -> Any:
        it = iter(arrays)
        where, temperature, b = (next(it) if g else None for g in given)
        if scalar:
            # a Python float: one compilation serves every temperature value,
            # rounded to the compute dtype once, as an array of it would be
            temperature = jnp.asarray(temperature, dtype=compute)
        call = dataclasses.replace(
            static, x=x, where=where, temperature=temperature, b=b
        )
        return kernel(call, **options)

    return jax.jit(run)


def _is_array(value: Any) -> bool:
    return value is not None and not isinstance(value, float)


# What a configuration runs: its jitted kernel, or _EAGER (an empty input). The
# key is the static part of a Call, read field by field (building and hashing
# a stripped Call each time costs several microseconds, a third of a small
# call); the arrays' own shapes and dtypes are jax.jit's key.
_READY: dict[tuple[Any, ...], Any] = {}
_EAGER = object()


def _launch(kind: str, call: Call, opts: dict[str, Any], *, fast: bool) -> Any:
    where, t, b = call.where, call.temperature, call.b
    key = (
        kind,
        fast,
        call.func,
        call.xp,
        call.shape,
        call.axes,
        call.out_dtype,
        call.compute_dtype,
        where is None,
        b is None,
        None if t is None else isinstance(t, float),
        tuple(opts.items()),
        _PALLAS,
    )
    fn = _READY.get(key)
    if fn is None:
        fn = _READY[key] = _prepared(kind, call, opts, fast=fast)
    if fn is _EAGER:
        # nothing to compute: the generic core fills the output on x's own
        # device (or sharding), which a jitted constant would not keep
        return getattr(_generic, kind)(call, **opts)
    if where is None and t is None and b is None:
        return fn(call.x)
    return fn(call.x, *(a for a in (where, t, b) if a is not None))


# The Pallas kernels (jax_pallas.py), off by default: None (off), "gpu"
# (SOFTMAX_XP_PALLAS=1: on CUDA devices) or "interpret" (tests: on every
# platform, in Pallas's interpret mode). Part of _READY's key; see _pallas().
_PALLAS: str | None = "gpu" if os.environ.get("SOFTMAX_XP_PALLAS") == "1" else None


@contextlib.contextmanager
def _pallas(mode: str | None) -> Iterator[None]:
    """Calls in this block take the Pallas kernels (``"gpu"``, ``"interpret"``) or
    not (``None``): for the benchmark's ``jax [pallas]`` row and the tests. Process
    wide, not per thread; a caller's own ``jax.jit`` keeps what it traced."""
    global _PALLAS  # noqa: PLW0603 - a private switch for the benchmark and tests
    previous, _PALLAS = _PALLAS, mode
    try:
        yield
    finally:
        _PALLAS = previous


def _prepared(kind: str, call: Call, opts: dict[str, Any], *, fast: bool) -> Any:
    """What :func:`_launch` runs for ``call``'s configuration (cached there)."""
    if call.empty:
        return _EAGER
    fast = fast and _covered(kind, call)
    if fast and _PALLAS is not None:
        from . import jax_pallas

        fn = jax_pallas.prepared(
            kind,
            call,
            opts,
            _jitted(kind, call, opts, fast),
            interpret=_PALLAS == "interpret",
        )
        if fn is not None:
            return fn
    return _jitted(kind, call, opts, fast)


def _covered(kind: str, call: Call) -> bool:
    """Whether the fast core applies; the rest runs the compiled generic core."""
    if call.empty or not call.axes:
        return False
    real = dtype_kind(call.xp, call.compute_dtype) == "real floating"
    return kind != "logsumexp" or (call.b is None and real)


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)``'s answer, compiled, with cheap gradients."""
    return _launch(kind, call, opts, fast=True)


def run_generic(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)`` compiled as it is, with JAX's autodiff."""
    return _launch(kind, call, opts, fast=False)
