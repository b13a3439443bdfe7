"""The streaming normaliser: logsumexp over chunks that arrive one at a time.

A slice's normaliser is summarised by a :class:`LogSumExpState` ``(max, rest)``:
its maximum ``m`` and ``rest = S - 1``, where ``S`` is the sum of
``exp(x - m)``. The sum of ``exp(x)`` is ``e^m (1 + rest)``; keeping the
leading 1 out of ``rest`` is the log1p form, so ``logsumexp`` of the combined
chunks is ``m + log1p(rest)`` and keeps full relative precision when one term
dominates (``[0]`` and ``[-40]`` in two chunks still give ``4.248e-18``).

Two states combine as the online normaliser does (Milakov & Gimelshein,
"Online normalizer calculation for softmax", 2018), written on the side that
holds the larger maximum ``M``::

    rest = rest_M + (1 + rest_other) e^(m_other - M)      (e^0 = 1 on a tie)

The special slices need no extra field:

- nothing left (all ``-inf``, all masked, no entries) is ``(-inf, -1)``:
  ``1 + rest = 0``, so it is the neutral element of the combine;
- k ``+inf`` entries are ``(+inf, k - 1)``: ``e^(finite - inf) = 0`` drops the
  finite parts and two ``+inf`` sides add their counts, so the combined state
  still knows how to share the mass (softmax gives ``1/k`` there);
- a NaN slice is ``(NaN, NaN)``, and NaN wins every combine.

Everything is array API standard code without Python branches on values: it
runs eagerly or under ``jax.jit`` / ``jax.lax.scan`` (a NamedTuple is a pytree),
on Dask without computing, on torch without host syncs, and it creates no NaN
that the input did not carry, so gradients stay finite.

States are held in the input's floating dtype, with half precision (float16,
bfloat16) widened to float32, on every backend alike. Where the library's
float32 ``exp`` is not accurate enough for logsumexp's bound (NumPy), a state
is computed in float64 and rounded once, as :func:`softmax_xp.logsumexp` does.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from . import _fast, _generic
from ._call import compute_dtype, lse_compute_dtype
from ._compat import (
    Array,
    Namespace,
    array_namespace,
    device,
    dtype_kind,
    is_array,
    library_of,
)
from ._kernels import (
    const,
    constant_where_masked,
    lse_from_state,
    merge_states,
    poison,
    round_to,
    shift,
)
from ._validation import (
    as_array,
    check_fits,
    check_flag,
    describe,
    fail,
    output_dtype,
    prepare_logsumexp,
    refuse_own_mask,
    where_mask,
)

__all__ = [
    "LogSumExpState",
    "log_softmax_from_state",
    "logsumexp_combine",
    "logsumexp_finish",
    "logsumexp_state",
    "softmax_from_state",
]


class LogSumExpState(NamedTuple):
    """A slice's logsumexp normaliser, ready to be combined with other chunks'.

    ``sum(exp(x)) == exp(max) * (1 + rest)``. Made by :func:`logsumexp_state`,
    merged by :func:`logsumexp_combine`, turned into ``logsumexp`` by
    :func:`logsumexp_finish`. Nothing left is ``(-inf, -1)``, k ``+inf``
    entries are ``(+inf, k - 1)``, a NaN slice is ``(NaN, NaN)``.

    Attributes
    ----------
    max : array
        The maximum of each slice.
    rest : array
        ``sum(exp(x - max)) - 1``: the terms other than one maximum.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import LogSumExpState, logsumexp_combine, logsumexp_finish
    >>> empty = LogSumExpState(np.asarray(-np.inf), np.asarray(-1.0))
    >>> two = LogSumExpState(np.asarray(np.inf), np.asarray(1.0))  # two +inf entries
    >>> logsumexp_combine(empty, two)
    LogSumExpState(max=array(inf), rest=array(1.))
    >>> logsumexp_finish(LogSumExpState(np.asarray(0.0), np.asarray(1.0)))  # log(2)
    array(0.69314718)
    """

    max: Array
    rest: Array


def logsumexp_state(
    x: Array,
    /,
    axis: int | tuple[int, ...] | None = None,
    *,
    where: Array | None = None,
    keepdims: bool = False,
    dtype: Any = None,
    xp: Any = None,
) -> LogSumExpState:
    """The logsumexp normaliser of one chunk, as a state to combine with others.

    ``logsumexp_finish(logsumexp_combine(*(logsumexp_state(c, axis) for c in
    chunks)))`` is ``logsumexp`` of the chunks concatenated along ``axis``,
    whatever their sizes and in any order: a vocabulary sharded across
    devices, or logits that arrive as a stream.

    Parameters
    ----------
    x : array_like
        One chunk of real input; integers and bools become the default float.
    axis : int, tuple of int or None, optional
        Axes this chunk is reduced over; default all of them.
    where : array of bool, optional
        Entries that take part; the others are absent.
    keepdims : bool, optional
        Keep the reduced axes with length one (handy for broadcasting the
        normaliser back over the chunk).
    dtype : dtype, optional
        Real floating dtype of ``x``'s library to compute as.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    LogSumExpState
        ``(max, rest)`` in ``x``'s floating dtype (float32 for float16 and
        bfloat16 input).

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import logsumexp_combine, logsumexp_finish, logsumexp_state
    >>> a = logsumexp_state(np.asarray([0.0, 1.0]))
    >>> b = logsumexp_state(np.asarray([2.0, -np.inf, 3.0]))
    >>> logsumexp_finish(logsumexp_combine(a, b))
    array(3.4401897)
    >>> logsumexp_state(np.asarray([np.inf, 1.0, np.inf]))
    LogSumExpState(max=array(inf), rest=array(1.))
    """
    func = "logsumexp_state"
    keepdims = check_flag(func, "keepdims", keepdims)
    call = prepare_logsumexp(x, axis, None, where, dtype, xp, func=func)
    ns = call.xp
    if dtype_kind(ns, call.out_dtype) != "real floating":
        msg = f"x has the complex dtype {call.out_dtype}; states are defined for real input only"
        raise fail(TypeError, func, msg)
    # JAX compiles the generic core once per configuration; the rest run it as is
    runner = _fast.generic_runner_for(ns)
    if runner is not None:
        m, rest = runner("logsumexp_state", call, keepdims=keepdims)
    else:
        m, rest = _generic.logsumexp_state(call, keepdims=keepdims)
    return LogSumExpState(m, rest)


def _check_state(func: str, name: str, state: Any) -> tuple[Array, Array]:
    if isinstance(state, tuple) and len(state) == 2:
        fields = getattr(state, "_fields", ("max", "rest"))
        for field, a in zip(fields, state, strict=True):
            refuse_own_mask(func, f"{name}.{field}", a)
    if (
        not isinstance(state, tuple)
        or len(state) != 2
        or not all(is_array(a) for a in state)
    ):
        msg = (
            f"{name}={describe(state)} is not a LogSumExpState "
            "(make one with logsumexp_state)"
        )
        raise fail(TypeError, func, msg)
    return state[0], state[1]


def _namespace_of(func: str, arrays: list[tuple[str, Array]], xp: Any) -> Namespace:
    namespaces = []
    for name, a in arrays:
        try:
            namespaces.append((name, array_namespace(a)))
        except TypeError as err:
            msg = f"{name} holds an unsupported array type {type(a).__name__}"
            raise fail(TypeError, func, msg) from err
    ns = namespaces[0][1]
    for name, other in namespaces[1:]:
        if other is not ns:
            msg = (
                f"{name} is an array of {other.__name__}, but the first state's "
                f"are of {ns.__name__}; states of one combine must share a namespace"
            )
            raise fail(TypeError, func, msg)
    if xp is not None and library_of(xp) != library_of(ns):
        msg = f"xp={describe(xp)} does not match the states' library {library_of(ns)}"
        raise fail(TypeError, func, msg)
    for name, a in arrays:
        if dtype_kind(ns, a.dtype) != "real floating":
            msg = f"{name} has the dtype {a.dtype}; states are real floating arrays"
            raise fail(TypeError, func, msg)
    return ns


def logsumexp_combine(*states: LogSumExpState, xp: Any = None) -> LogSumExpState:
    """Merge the states of several chunks into the state of their concatenation.

    The combine is associative and commutative (up to rounding), and
    ``(-inf, -1)`` is its neutral element, so states may be merged in any
    order or tree, as they arrive. The states broadcast together.

    Parameters
    ----------
    *states : LogSumExpState
        One or more states from :func:`logsumexp_state` (or earlier
        combines), of one namespace.
    xp : namespace, optional
        The array namespace; inferred from the states by default.

    Returns
    -------
    LogSumExpState
        In the states' promoted dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import logsumexp_combine, logsumexp_finish, logsumexp_state
    >>> chunks = [np.asarray([0.0]), np.asarray([-40.0]), np.asarray([-np.inf])]
    >>> logsumexp_finish(logsumexp_combine(*(logsumexp_state(c) for c in chunks)))
    array(4.24835426e-18)
    """
    func = "logsumexp_combine"
    if not states:
        raise fail(TypeError, func, "needs at least one state")
    pairs = [_check_state(func, f"states[{i}]", s) for i, s in enumerate(states)]
    arrays = [
        (f"states[{i}].{field}", a)
        for i, pair in enumerate(pairs)
        for field, a in zip(LogSumExpState._fields, pair, strict=True)
    ]
    ns = _namespace_of(func, arrays, xp)
    dt = ns.result_type(*(a for _, a in arrays))
    pairs = [
        (
            a if a.dtype == dt else ns.astype(a, dt),
            b if b.dtype == dt else ns.astype(b, dt),
        )
        for a, b in pairs
    ]
    try:
        shape = ns.broadcast_arrays(*(a for pair in pairs for a in pair))[0].shape
    except Exception as err:
        shapes = ", ".join(str(tuple(a.shape)) for _, a in arrays)
        msg = f"the states' shapes do not broadcast together: {shapes}"
        raise fail(ValueError, func, msg) from err
    m, rest = _merge_tree(ns, pairs)
    if tuple(m.shape) != tuple(shape) or tuple(rest.shape) != tuple(shape):
        m, rest = ns.broadcast_to(m, shape), ns.broadcast_to(rest, shape)
    return LogSumExpState(m, rest)


def _merge_tree(ns: Namespace, pairs: list[tuple[Array, Array]]) -> tuple[Array, Array]:
    """All states merged as a balanced tree: it rounds less than a left fold."""
    while len(pairs) > 1:
        merged = [
            merge_states(ns, pairs[i], pairs[i + 1])
            for i in range(0, len(pairs) - 1, 2)
        ]
        if len(pairs) % 2:
            merged.append(pairs[-1])
        pairs = merged
    return pairs[0]


def logsumexp_finish(
    state: LogSumExpState, /, *, dtype: Any = None, xp: Any = None
) -> Array:
    """``logsumexp`` of everything a state has seen: ``max + log1p(rest)``.

    ``-inf`` where nothing was seen, ``+inf`` with ``+inf`` entries, NaN with
    NaN. Subtract it from a chunk's entries for that chunk's log-softmax
    wherever it is finite.

    Parameters
    ----------
    state : LogSumExpState
        From :func:`logsumexp_state` or :func:`logsumexp_combine`.
    dtype : dtype, optional
        Real floating output dtype of the state's library, e.g. the chunks'
        float16 to round the float32 state once; default the state's dtype.
    xp : namespace, optional
        The array namespace; inferred from the state by default.

    Returns
    -------
    array
        The logsumexp, with the state's shape.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import logsumexp_finish, logsumexp_state
    >>> logsumexp_finish(logsumexp_state(np.asarray([[0.0, 0.0], [-np.inf, -np.inf]]), axis=1))
    array([0.69314718,       -inf])
    """
    func = "logsumexp_finish"
    m, rest = _check_state(func, "state", state)
    ns = _namespace_of(func, [("state.max", m), ("state.rest", rest)], xp)
    dt = ns.result_type(m.dtype, rest.dtype)
    out_dtype = output_dtype(func, ns, dt, dtype, device(m), complex_ok=False)
    compute = lse_compute_dtype(ns, dt, device(m))
    if m.dtype != compute:
        m = ns.astype(m, compute)
    if rest.dtype != compute:
        rest = ns.astype(rest, compute)
    return round_to(ns, lse_from_state(ns, m, rest), out_dtype)


def _from_state(
    func: str, x: Any, state: Any, where: Any, xp: Any, *, log: bool
) -> Array:
    """Validate a chunk and its state, then normalise the chunk by the state."""
    arr, ns = as_array(func, x, xp)
    m, rest = _check_state(func, "state", state)
    _check_same_library(func, x, ns, m, rest)
    dev = device(arr)
    shape = tuple(arr.shape)
    if dtype_kind(ns, arr.dtype) in ("bool", "integral"):
        # integer chunks take the state's floating dtype, the one
        # logsumexp_state gave them (the default float) unless the caller chose
        out_dtype = ns.result_type(m.dtype, rest.dtype)
    else:
        out_dtype = output_dtype(func, ns, arr.dtype, None, dev, complex_ok=False)
    for name, a in (("state.max", m), ("state.rest", rest)):
        check_fits(func, name, a, shape)
    mask = where_mask(func, where, ns, shape, dev)
    compute = ns.result_type(compute_dtype(ns, out_dtype), m.dtype, rest.dtype)
    out = _normalised(ns, arr, (m, rest), mask, compute, log=log)
    return round_to(ns, out, out_dtype)


def _check_same_library(
    func: str, x: Any, ns: Namespace, m: Array, rest: Array
) -> None:
    state_ns = _namespace_of(func, [("state.max", m), ("state.rest", rest)], None)
    if library_of(state_ns) != library_of(ns):
        msg = (
            f"x={describe(x)} is an array of {library_of(ns)} but the state's "
            f"are of {library_of(state_ns)}; mixed namespaces are not supported"
        )
        raise fail(TypeError, func, msg)


def _normalised(
    ns: Namespace,
    chunk: Array,
    state: tuple[Array, Array],
    mask: Array | None,
    compute: Any,
    *,
    log: bool,
) -> Array:
    """``exp(x - lse)`` (``log``: ``x - lse``) of a chunk, ``lse`` the state's, in ``compute``."""
    # x is masked before any operation touches it, as in the one-pass functions
    if dtype_kind(ns, chunk.dtype) != "real floating":
        chunk = ns.astype(chunk, compute)
    if mask is not None:
        chunk = ns.where(mask, chunk, const(ns, -math.inf, chunk))
    m, rest = (a if a.dtype == compute else ns.astype(a, compute) for a in state)
    if chunk.dtype != compute:
        chunk = ns.astype(chunk, compute)
    # the shift as the one-pass functions form it, with the state's maximum; a
    # +inf maximum shares its mass among the +inf entries (rest = k - 1),
    # nothing left gives -inf
    sh = shift(ns, chunk, (), m)
    zero = const(ns, 0.0, chunk)
    rest = ns.where(m > const(ns, -math.inf, m), rest, zero)  # NaN too
    out = sh.z - ns.log1p(rest) if log else sh.e / (rest + 1)
    out = poison(ns, m, out, mask)
    # masked outputs are constants: their cotangents reach neither x nor the state
    return constant_where_masked(ns, out, mask, -math.inf if log else 0.0)


def softmax_from_state(
    x: Array, state: LogSumExpState, /, *, where: Array | None = None, xp: Any = None
) -> Array:
    """The softmax of one chunk, normalised over everything the state has seen.

    With ``state`` the combined state of all chunks (``keepdims=True`` so
    that it broadcasts over ``x``), the chunks' results together are the
    softmax of the concatenation, with the contract's special values: k
    ``+inf`` entries anywhere share the mass (``1/k`` each), nothing left
    gives 0, a NaN anywhere in a slice gives NaN (masked entries stay 0).

    Parameters
    ----------
    x : array_like
        One chunk, whose state went into ``state``.
    state : LogSumExpState
        The combined state, broadcastable to ``x`` without enlarging it.
    where : array of bool, optional
        The chunk's mask, as given to :func:`logsumexp_state`.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    array
        ``x``'s shape and floating dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import logsumexp_combine, logsumexp_state, softmax_from_state
    >>> a, b = np.asarray([0.3, 2.9]), np.asarray([4.0])
    >>> state = logsumexp_combine(logsumexp_state(a), logsumexp_state(b))
    >>> softmax_from_state(a, state), softmax_from_state(b, state)
    (array([0.01821127, 0.24519181]), array([0.73659691]))
    """
    return _from_state("softmax_from_state", x, state, where, xp, log=False)


def log_softmax_from_state(
    x: Array, state: LogSumExpState, /, *, where: Array | None = None, xp: Any = None
) -> Array:
    """The log-softmax of one chunk, normalised over everything the state has seen.

    ``x - max - log1p(rest)``: the log1p form of :func:`softmax_xp.log_softmax`,
    with its special values (``-log k`` on k ``+inf`` entries, ``-inf`` where
    nothing is left or masked, NaN with NaN).

    Parameters
    ----------
    x : array_like
        One chunk, whose state went into ``state``.
    state : LogSumExpState
        The combined state, broadcastable to ``x`` without enlarging it.
    where : array of bool, optional
        The chunk's mask, as given to :func:`logsumexp_state`.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    array
        ``x``'s shape and floating dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import log_softmax_from_state, logsumexp_combine, logsumexp_state
    >>> a, b = np.asarray([np.inf, 1.0]), np.asarray([np.inf])
    >>> state = logsumexp_combine(logsumexp_state(a), logsumexp_state(b))
    >>> log_softmax_from_state(a, state)
    array([-0.69314718,        -inf])
    """
    return _from_state("log_softmax_from_state", x, state, where, xp, log=True)
