"""The public functions: validate, pick the path, call it."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _fast, _generic
from ._call import Call
from ._compat import Array
from ._validation import check_flag, prepare, prepare_logsumexp

__all__ = ["log_softmax", "logsumexp", "softmax", "softmin"]


def _no_numpy_scalar(out: Any) -> Any:
    """NumPy reductions can hand back NumPy scalars; the contract promises arrays."""
    if isinstance(out, np.generic):
        return np.asarray(out)
    return out


def _run(kind: str, call: Call, **opts: Any) -> Any:
    """Hand the validated call to the backend's fast path, or to the generic core."""
    if _fast.generic_forced():
        runner = _fast.generic_runner_for(call.xp)
        if runner is not None:
            return runner(kind, call, **opts)
    else:
        runner = _fast.runner_for(call.xp)
        if runner is not None:
            out = runner(kind, call, **opts)
            if out is not NotImplemented:
                return out
    return getattr(_generic, kind)(call, **opts)


def softmax(
    x: Array,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    where: Array | None = None,
    temperature: float | Array | None = None,
    dtype: Any = None,
    xp: Any = None,
) -> Array:
    """Softmax of ``x`` along ``axis``: ``exp(x) / sum(exp(x))``, computed stably.

    Parameters
    ----------
    x : array_like
        Input array of any array API library (NumPy, PyTorch, JAX, Dask, CuPy,
        array-api-strict), or a Python scalar, list or tuple (taken as NumPy,
        or with ``xp`` when it is given).
    axis : int, tuple of int or None, optional
        Axes that form each slice of the distribution; default the last.
        ``None`` means all axes, ``()`` makes every element its own slice.
    where : array of bool, optional
        Entries that take part; ``False`` entries are ignored (even when they
        hold NaN or inf) and get probability 0. Broadcasts to ``x``.
    temperature : float or array, optional
        Positive scalar or array broadcastable to ``x``; the result is that of
        ``x / temperature``.
    dtype : dtype, optional
        Real floating output dtype of ``x``'s library; ``x`` is cast to it first.
        Half precision is always computed in float32 and rounded once.
    xp : namespace, optional
        The array namespace (``numpy``, ``torch``, ... or the array-api-compat
        wrapper); inferred from ``x`` by default.

    Returns
    -------
    array
        Same shape, library and device as ``x``; floating dtype as described.
        A slice with a NaN is all NaN; ``k`` entries of ``+inf`` get ``1/k``
        each; a slice with nothing left (all ``-inf``, all masked, empty) is 0.

    Raises
    ------
    TypeError
        For complex input, non-boolean ``where``, a bad ``dtype``, arrays of
        another library, an unsupported input type, or an array that carries
        its own mask or index (a NumPy masked array, ``np.matrix``, pandas,
        sparse arrays: pass the plain data, and a mask as ``where``).
    ValueError
        For a bad ``axis``, a non-positive temperature or one that is not a
        normal number in the compute dtype, integers beyond 64 bits in a list,
        or shapes that do not broadcast to ``x``.

    See Also
    --------
    log_softmax, softmin, logsumexp

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import softmax
    >>> softmax(np.asarray([0.3, 2.9, 4.0]))
    array([0.01821127, 0.24519181, 0.73659691])
    >>> softmax(np.asarray([1010.0, 1000.0, 990.0]))
    array([9.99954600e-01, 4.53978686e-05, 2.06106005e-09])
    >>> softmax(np.asarray([np.inf, 1.0]))
    array([1., 0.])
    """
    call = prepare("softmax", x, axis, where, temperature, dtype, xp)
    return _no_numpy_scalar(_run("softmax", call))


def softmin(
    x: Array,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    where: Array | None = None,
    temperature: float | Array | None = None,
    dtype: Any = None,
    xp: Any = None,
) -> Array:
    """Softmin of ``x`` along ``axis``: the softmax of ``-x``.

    Takes the same parameters and keeps the same contract as :func:`softmax`;
    ``-inf`` entries of ``x`` now get the whole mass and ``+inf`` entries 0.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import softmin
    >>> softmin(np.asarray([0.0, 1.0, 2.0]))
    array([0.66524096, 0.24472847, 0.09003057])
    """
    call = prepare("softmin", x, axis, where, temperature, dtype, xp)
    return _no_numpy_scalar(_run("softmax", call, negate=True))


def log_softmax(
    x: Array,
    /,
    axis: int | tuple[int, ...] | None = -1,
    *,
    where: Array | None = None,
    temperature: float | Array | None = None,
    dtype: Any = None,
    xp: Any = None,
) -> Array:
    """Logarithm of the softmax of ``x`` along ``axis``.

    Computed as ``x - m - log1p(s')`` with the largest term kept out of the
    sum, so that the largest log-probability keeps full relative precision.
    Parameters as for :func:`softmax`; where softmax gives 0 this gives
    ``-inf``, and ``k`` entries of ``+inf`` give ``-log(k)``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import log_softmax
    >>> log_softmax(np.asarray([1010.0, 1000.0, 990.0]))
    array([-4.54009603e-05, -1.00000454e+01, -2.00000454e+01])
    >>> log_softmax(np.asarray([-np.inf, -np.inf]))
    array([-inf, -inf])
    """
    call = prepare("log_softmax", x, axis, where, temperature, dtype, xp)
    return _no_numpy_scalar(_run("log_softmax", call))


def logsumexp(
    x: Array,
    /,
    axis: int | tuple[int, ...] | None = None,
    *,
    b: Array | float | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
    where: Array | None = None,
    dtype: Any = None,
    xp: Any = None,
) -> Array | tuple[Array, Array]:
    """``log(sum(b * exp(x)))`` over ``axis``, computed stably.

    Follows :func:`scipy.special.logsumexp` for ``b`` and ``return_sign``, in
    the log1p form of Blanchard, Higham & Higham (2021): the largest term is
    kept out of the sum, so ``logsumexp([0, -40])`` is ``4.248e-18``, not 0.

    Parameters
    ----------
    x : array_like
        Input array (real or complex), Python scalar, list or tuple.
    axis : int, tuple of int or None, optional
        Axes to reduce; default all of them. ``()`` reduces nothing.
    b : array_like or float, optional
        Weights, broadcast jointly with ``x``; entries with ``b == 0`` are
        ignored even when ``x`` is inf or NaN there. ``x`` and ``b`` are
        promoted together.
    keepdims : bool, optional
        Keep the reduced axes with length one.
    return_sign : bool, optional
        Also return the sign of the weighted sum (0 when nothing is left).
        Without it a negative weighted sum gives NaN, as in SciPy.
    where : array of bool, optional
        Entries that take part (masks ``b`` too).
    dtype : dtype, optional
        Real floating output dtype of ``x``'s library.
    xp : namespace, optional
        The array namespace; inferred from ``x`` by default.

    Returns
    -------
    lse : array
        The result; ``-inf`` where nothing is left, ``+inf`` with ``+inf``
        entries, NaN with NaN.
    sign : array
        Only with ``return_sign=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from softmax_xp import logsumexp
    >>> logsumexp(np.asarray([0.0, -40.0]))
    array(4.24835426e-18)
    >>> logsumexp(np.asarray([1.0, 2.0]), b=np.asarray([-1.0, 0.5]), return_sign=True)
    (array(-0.02404045), array(1.))
    >>> logsumexp(np.asarray([[0.0, 1.0], [-np.inf, -np.inf]]), axis=1)
    array([1.31326169,       -inf])
    """
    keepdims = check_flag("logsumexp", "keepdims", keepdims)
    return_sign = check_flag("logsumexp", "return_sign", return_sign)
    call = prepare_logsumexp(x, axis, b, where, dtype, xp)
    out = _run("logsumexp", call, keepdims=keepdims, return_sign=return_sign)
    if isinstance(out, tuple):
        return _no_numpy_scalar(out[0]), _no_numpy_scalar(out[1])
    return _no_numpy_scalar(out)
