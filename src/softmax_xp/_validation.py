"""Argument rules of the public functions and their errors, in one place.

Everything here runs before any computation and looks only at types, dtypes
and shapes, never at array values (except Python-scalar temperatures), so it
is safe under ``jax.jit`` and leaves Dask arrays lazy.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ._call import Call, compute_dtype, lse_compute_dtype
from ._compat import (
    Array,
    Namespace,
    array_namespace,
    bits,
    default_float,
    device,
    dtype_kind,
    is_array,
    library_of,
    new_array_device,
    torch_compiling,
)

__all__ = [
    "as_array",
    "check_fits",
    "check_flag",
    "describe",
    "fail",
    "output_dtype",
    "prepare",
    "prepare_logsumexp",
    "refuse_own_mask",
    "where_mask",
]


def fail(exc: type[Exception], func: str, text: str) -> Exception:
    return exc(f"{func}: {text}")


def describe(value: Any) -> str:
    """A short description of a value for error messages (arrays by type/dtype/shape)."""
    if is_array(value) and not isinstance(value, np.generic):  # NumPy scalars: repr
        return (
            f"<{type(value).__name__} dtype={value.dtype} shape={tuple(value.shape)}>"
        )
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Types that carry their own mask, index or sparsity, by the module that defines
# them (checked by name, so that no library is imported): what the type is,
# what would be lost, and what to pass instead (per parameter, "*" for others).
_CARRIERS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "numpy.ma",
        "a NumPy masked array, whose mask would be dropped",
        {
            "x": "x.data with where=~x.mask",
            "where": "where.filled(False)",
            "b": "b.filled(0) (entries with b == 0 are ignored)",
            "*": "{n}.data, and fold ~{n}.mask into where",
        },
    ),
    (
        "torch.masked",
        "a torch MaskedTensor, whose mask would be dropped",
        {
            "x": "x.get_data() with where=x.get_mask()",
            "where": "where.get_data() & where.get_mask()",
            "*": "{n}.get_data(), and fold {n}.get_mask() into where",
        },
    ),
    ("numpy.matrixlib", "an np.matrix (always 2-d)", {"*": "np.asarray({n})"}),
    (
        "pandas",
        "a pandas object, whose index would be dropped",
        {"*": "{n}.to_numpy()"},
    ),
    (
        "xarray",
        "an xarray object, whose coordinates would be dropped",
        {"*": "{n}.to_numpy()"},
    ),
    ("scipy.sparse", "a SciPy sparse array", {"*": "{n}.toarray()"}),
    ("cupyx.scipy.sparse", "a CuPy sparse matrix", {"*": "{n}.toarray()"}),
    ("sparse", "a pydata sparse array", {"*": "{n}.todense()"}),
    ("jax.experimental.sparse", "a JAX sparse array", {"*": "{n}.todense()"}),
)
_CARRIER_BY_TYPE: dict[type, tuple[str, dict[str, str]] | None] = {np.ndarray: None}


def _carrier_of(cls: type) -> tuple[str, dict[str, str]] | None:
    """``(what, instead)`` when instances of ``cls`` carry their own mask or index."""
    try:
        return _CARRIER_BY_TYPE[cls]
    except KeyError:
        pass
    found = None
    for c in cls.__mro__:
        mod = c.__module__ or ""
        if mod == "numpy" and c.__name__ == "matrix":  # np.matrix reports "numpy"
            mod = "numpy.matrixlib"
        for prefix, what, instead in _CARRIERS:
            if mod == prefix or mod.startswith(prefix + "."):
                found = (what, instead)
                break
        if found is not None:
            break
    with contextlib.suppress(TypeError):  # an unhashable class: look it up each time
        _CARRIER_BY_TYPE[cls] = found
    return found


_PLAIN_SCALARS = (bool, int, float, complex)


def refuse_own_mask(func: str, name: str, value: Any) -> None:
    """``TypeError`` for arrays that carry their own mask, index or sparse layout.

    Such an array would be taken as plain data with its mask or index dropped
    (a NumPy masked array reaches us as an ndarray subclass), or fail deep in a
    backend; the message says what to pass instead.
    """
    cls = type(value)
    # plain arrays and Python scalars carry nothing (and torch.compile cannot
    # trace the walk over a builtin's __mro__ in _carrier_of)
    if cls is np.ndarray or cls in _PLAIN_SCALARS:
        return
    found = _carrier_of(cls)
    mod = cls.__module__ or ""
    if found is None and mod.startswith("torch"):
        layout = getattr(value, "layout", None)
        if layout is not None and str(layout) != "torch.strided":
            found = (
                f"a sparse torch tensor (layout {layout})",
                {"*": "{n}.to_dense()"},
            )
    if found is None and mod.startswith("dask"):
        inner = _carrier_of(type(getattr(value, "_meta", None)))
        if inner is not None:
            found = (
                f"a Dask array of chunks that are {inner[0]}",
                {"*": "a Dask array of plain chunks (da.ma.getdata, or dense blocks)"},
            )
    if found is None:
        return
    what, instead = found
    advice = instead.get(name, instead["*"]).format(n=name)
    msg = f"{name}={describe(value)} is {what}; pass {advice} instead"
    raise fail(TypeError, func, msg)


def _huge_int(value: Any) -> int | None:
    """A Python int in ``value`` (nested lists and tuples) beyond the 64-bit integers."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list | tuple):
            stack.extend(v)
        elif isinstance(v, int) and not -(2**63) <= v < 2**63:
            return v
    return None


def _from_python(
    func: str, name: str, value: Any, make: Any, exc: type[Exception]
) -> Array:
    """``make()``, the array of a Python scalar or list, with our errors on failure.

    NumPy turns integers beyond 64 bits into an object array, torch and JAX
    raise deep inside: both become one ``ValueError`` naming the integer.
    """
    try:
        arr = make()
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        huge = _huge_int(value)
        if huge is not None:
            raise _huge_int_error(func, name, value, huge) from err
        msg = f"{name}={describe(value)} cannot be made into an array: {err}"
        raise fail(exc, func, msg) from err
    if getattr(arr.dtype, "kind", None) == "O":
        huge = _huge_int(value)
        if huge is not None:
            raise _huge_int_error(func, name, value, huge)
    return arr


def _huge_int_error(func: str, name: str, value: Any, huge: int) -> Exception:
    shown = (
        f"{huge:.3e}" if abs(huge) < 10**300 else "an integer of more than 300 digits"
    )
    msg = (
        f"{name}={describe(value)} holds the integer {shown}, beyond the 64-bit "
        f"integers that array libraries hold; pass it as a float"
    )
    return fail(ValueError, func, msg)


def as_array(func: str, x: Any, xp: Any) -> tuple[Array, Namespace]:
    """``x`` as an array and its (compat) namespace; ``xp`` checked against it."""
    refuse_own_mask(func, "x", x)
    if is_array(x):
        arr = x
    elif isinstance(x, numbers.Number | list | tuple):
        mod = xp if xp is not None else np
        arr = _from_python(func, "x", x, lambda: mod.asarray(x), ValueError)
    else:
        msg = (
            f"x must be an array of an array API library, a Python scalar, list or "
            f"tuple, not {type(x).__module__}.{type(x).__qualname__}"
        )
        raise fail(TypeError, func, msg)
    try:
        ns = array_namespace(arr)
    except TypeError as err:
        msg = f"x of type {type(arr).__qualname__} is not a supported array type"
        raise fail(TypeError, func, msg) from err
    if xp is not None and library_of(xp) != library_of(ns):
        msg = (
            f"xp={getattr(xp, '__name__', xp)!r} does not match x, an array of "
            f"{library_of(ns)}; pass xp of x's library or leave it out"
        )
        raise fail(TypeError, func, msg)
    return arr, ns


def check_flag(func: str, name: str, value: Any) -> bool:
    """``value`` as a bool; anything but ``bool`` / ``np.bool_`` is a ``TypeError``."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    msg = f"{name}={describe(value)} must be a bool"
    raise fail(TypeError, func, msg)


def _axes(func: str, axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out: list[int] = []
    for a in items:
        i = _axis_index(func, axis, a)
        if not -ndim <= i < ndim:
            msg = f"axis={axis!r} is out of bounds for an array of {ndim} dimensions"
            raise fail(ValueError, func, msg)
        i %= ndim
        if i in out:
            msg = f"axis={axis!r} repeats axis {i}"
            raise fail(ValueError, func, msg)
        out.append(i)
    return tuple(sorted(out))


def _axis_index(func: str, axis: Any, a: Any) -> int:
    """One axis as an int: an int, a NumPy integer, or a 0-d integer array (not Dask's)."""
    ok = not isinstance(a, bool | np.bool_) and hasattr(a, "__index__")
    if ok and is_array(a) and not isinstance(a, np.generic):
        ns = array_namespace(a)
        # a Dask array's value would need a compute; bool arrays index as 0/1
        ok = (
            a.ndim == 0
            and dtype_kind(ns, a.dtype) == "integral"
            and library_of(ns) != "dask"
        )
    if ok:
        try:
            return operator.index(a)
        except Exception:  # noqa: BLE001 - e.g. a traced JAX value under jit
            ok = False
    shown = describe(axis) if is_array(axis) else repr(axis)
    msg = (
        f"axis={shown} must be an int, a tuple of ints or None "
        "(a 0-d integer array is taken as an int)"
    )
    raise fail(TypeError, func, msg)


def _broadcast_shape(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The broadcast of two shapes, or ``None`` when they do not broadcast."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for p, q in zip(a, b, strict=True):
        if p == 1:
            out.append(q)
        elif q in (1, p):
            out.append(p)
        elif _unknown(p) or _unknown(q):  # lazy arrays of unknown length
            out.append(p if _unknown(q) else q)
        else:
            return None
    return tuple(out)


def _unknown(n: Any) -> bool:
    return n is None or (isinstance(n, float) and math.isnan(n))


def _same_namespace_array(
    func: str, name: str, value: Any, xp: Namespace, dev: Any
) -> Array:
    """``value`` (Python scalar, list, or array of ``xp``) as an array of ``xp`` on ``dev``."""
    refuse_own_mask(func, name, value)
    if is_array(value):
        if library_of(array_namespace(value)) != library_of(xp):
            msg = (
                f"{name}={describe(value)} is an array of "
                f"{library_of(array_namespace(value))} but x is an array of "
                f"{library_of(xp)}; mixed namespaces are not supported"
            )
            raise fail(TypeError, func, msg)
        return value
    if isinstance(value, numbers.Number | list | tuple):
        place = new_array_device(xp, dev)
        return _from_python(
            func, name, value, lambda: xp.asarray(value, device=place), TypeError
        )
    msg = f"{name}={describe(value)} must be an array of x's library, a Python scalar or a list"
    raise fail(TypeError, func, msg)


def check_fits(func: str, name: str, value: Array, shape: tuple[Any, ...]) -> None:
    """``value`` must broadcast to ``shape`` without enlarging it."""
    joint = _broadcast_shape(tuple(value.shape), shape)
    if (
        joint is None
        or len(joint) != len(shape)
        or any(
            not (_unknown(j) or _unknown(s)) and j != s
            for j, s in zip(joint, shape, strict=True)
        )
    ):
        msg = f"{name} of shape {tuple(value.shape)} does not broadcast to x's shape {tuple(shape)}"
        raise fail(ValueError, func, msg)


def where_mask(
    func: str, where: Any, xp: Namespace, shape: tuple[Any, ...], dev: Any
) -> Array | None:
    if where is None:
        return None
    w = _same_namespace_array(func, "where", where, xp, dev)
    if dtype_kind(xp, w.dtype) != "bool":
        msg = f"where={describe(where)} must be boolean, not of dtype {w.dtype}"
        raise fail(TypeError, func, msg)
    check_fits(func, "where", w, shape)
    return w


def _temperature(
    func: str,
    t: Any,
    xp: Namespace,
    shape: tuple[Any, ...],
    dev: Any,
    compute_dtype: Any,
) -> float | Array | None:
    """A Python float checked to be a normal ``> 0``, or an array checked for dtype and shape only."""
    if t is None:
        return None
    refuse_own_mask(func, "temperature", t)
    if isinstance(t, bool | np.bool_):
        msg = f"temperature={t!r} must be a positive number or an array, not a bool"
        raise fail(TypeError, func, msg)
    # NumPy scalars count as Python scalars here, whatever x's library
    if isinstance(t, numbers.Real) and (not is_array(t) or hasattr(t, "item")):
        return _scalar_temperature(func, t, xp, compute_dtype)
    if isinstance(t, numbers.Number) and not is_array(t):  # complex scalars
        msg = f"temperature={t!r} must be a real number"
        raise fail(TypeError, func, msg)
    arr = _same_namespace_array(func, "temperature", t, xp, dev)
    if dtype_kind(xp, arr.dtype) not in ("integral", "real floating"):
        msg = f"temperature={describe(t)} must be of a real dtype, not {arr.dtype}"
        raise fail(TypeError, func, msg)
    check_fits(func, "temperature", arr, shape)
    return arr


def _scalar_temperature(func: str, t: Any, xp: Namespace, compute_dtype: Any) -> float:
    try:
        value = float(t)
    except OverflowError as err:  # an int or Fraction beyond float64
        msg = f"temperature={describe(t)} is beyond the range of a float"
        raise fail(ValueError, func, msg) from err
    if not (math.isfinite(value) and value > 0):
        msg = f"temperature={describe(t)} must be finite and > 0"
        raise fail(ValueError, func, msg)
    _check_normal(func, t, value, xp, compute_dtype)
    return value


# (smallest normal, largest finite, NumPy type of the same width) per compute dtype
_NORMAL_RANGE: dict[Any, tuple[float, float, Any]] = {}


def _check_normal(func: str, t: Any, value: float, xp: Namespace, dtype: Any) -> None:
    """A scalar temperature must stay a positive normal number in the compute dtype.

    ``x / t`` is formed there: a ``t`` that rounds to 0 divides by zero, a
    subnormal one is flushed to 0 by some backends (XLA), and one that rounds
    to inf makes every finite entry 0; all of them give NaN rows.
    """
    # keyed by the dtype's type too: array-api-strict warns when its dtypes are
    # compared with NumPy's, as a dict lookup would
    key = (type(dtype), str(dtype))
    try:
        lo, hi, np_type = _NORMAL_RANGE[key]
    except KeyError:
        fi = xp.finfo(dtype)
        np_type = {32: np.float32, 64: np.float64}.get(bits(xp, dtype))
        lo, hi = float(fi.smallest_normal), float(fi.max)
        _NORMAL_RANGE[key] = (lo, hi, np_type)
    rounded = value
    # torch.compile cannot trace np.errstate: there the bounds are checked on the
    # float64 value (it differs only within half an ulp of them)
    if np_type is not None and not torch_compiling():
        with np.errstate(over="ignore", under="ignore"):
            rounded = float(np_type(value))
    if not lo <= rounded <= hi:
        msg = (
            f"temperature={describe(t)} rounds to {rounded!r} in the compute dtype "
            f"{getattr(dtype, '__name__', dtype)}; it must be a normal number there, between {lo!r} and {hi!r}"
        )
        raise fail(ValueError, func, msg)


def output_dtype(
    func: str, xp: Namespace, x_dtype: Any, dtype: Any, dev: Any, *, complex_ok: bool
) -> Any:
    """The result's dtype: ``dtype=`` when given and valid, else derived from ``x``'s."""
    if dtype is not None:
        return _requested_dtype(func, xp, x_dtype, dtype, dev)
    kind = dtype_kind(xp, x_dtype)
    if kind in ("bool", "integral"):
        return default_float(xp, dev)
    if kind == "real floating" or (kind == "complex floating" and complex_ok):
        return x_dtype
    if kind == "complex floating":
        msg = (
            f"x has the complex dtype {x_dtype}; {func} is defined for real input only "
            f"(logsumexp accepts complex input)"
        )
        raise fail(TypeError, func, msg)
    msg = f"x has the unsupported dtype {x_dtype}"
    raise fail(TypeError, func, msg)


def _requested_dtype(
    func: str, xp: Namespace, x_dtype: Any, dtype: Any, dev: Any
) -> Any:
    """``dtype=`` itself, once it is a real floating dtype of ``xp`` that can hold ``x``."""
    if library_of(xp) in ("numpy", "dask", "cupy") and not isinstance(dtype, str):
        # accept scalar types such as np.float32 as well as dtype objects
        with contextlib.suppress(TypeError):
            dtype = np.dtype(dtype)
    if not _is_real_floating_dtype_of(xp, dtype, dev):
        msg = f"dtype={dtype!r} must be a real floating dtype of {library_of(xp)}"
        raise fail(TypeError, func, msg)
    if dtype_kind(xp, x_dtype) == "complex floating":
        msg = f"dtype={dtype!r} cannot hold the complex input of dtype {x_dtype}"
        raise fail(TypeError, func, msg)
    return dtype


def _is_real_floating_dtype_of(xp: Namespace, dtype: Any, dev: Any) -> bool:
    if isinstance(dtype, str) or dtype_kind(xp, dtype) != "real floating":
        return False
    try:  # a dtype of another library (torch.float32 for NumPy x) fails here
        probe = xp.empty((0,), dtype=xp.float32, device=new_array_device(xp, dev))
        xp.astype(probe, dtype)
    except Exception:  # noqa: BLE001 - any refusal means: not xp's dtype
        return False
    return True


# What a plain call (no dtype=, no xp=) derives from x's type, dtype and device
# alone, cached: on small arrays validation would otherwise cost as much as the
# computation. Filled only after the full checks have passed once for that key.
_PLAIN: dict[tuple[Any, ...], tuple[Namespace, Any, Any]] = {}
_AXES: dict[tuple[Any, int], tuple[int, ...]] = {}


def _plain_key(x: Any) -> tuple[Any, ...] | None:
    # exactly ndarray: its subclasses np.ma.MaskedArray and np.matrix take the
    # full checks below, which refuse them, so their keys are never cached
    cls = type(x)
    if cls is np.ndarray:  # the common case, without a device lookup
        return (np.ndarray, x.dtype, "cpu")
    if cls.__name__ == "Tensor" and cls.__module__ == "torch":
        # exactly torch.Tensor (subclasses take the lookup below): its own
        # ``device`` is what array-api-compat's ``device`` returns, at a tenth
        # of the cost
        return (cls, x.dtype, x.device, x.layout)
    try:
        key = (cls, x.dtype, device(x), _form(x, cls))
        hash(key)
    except Exception:  # noqa: BLE001 - not an array, or an unhashable device
        return None
    return key


# The part of an array's form that its type does not tell: a torch tensor's
# layout (sparse tensors are torch.Tensor too), a Dask array's chunk type.
_FORM_ATTR: dict[type, str] = {}


def _form(x: Any, cls: type) -> Any:
    attr = _FORM_ATTR.get(cls)
    if attr is None:
        mod = cls.__module__ or ""
        attr = _FORM_ATTR[cls] = (
            "layout"
            if mod.startswith("torch")
            else "_meta"
            if mod.startswith("dask")
            else ""
        )
    if not attr:
        return None
    value = getattr(x, attr, None)
    return type(value) if attr == "_meta" else value


def _cached_axes(func: str, axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None or type(axis) is int:  # bools, other index types: full check
        key = (axis, ndim)
        axes = _AXES.get(key)
        if axes is None:
            axes = _AXES[key] = _axes(func, axis, ndim)
        return axes
    return _axes(func, axis, ndim)


def prepare(
    func: str, x: Any, axis: Any, where: Any, temperature: Any, dtype: Any, xp: Any
) -> Call:
    """Validate the arguments of softmax, log_softmax or softmin."""
    if dtype is None and xp is None and where is None and temperature is None:
        # the three functions derive the same facts from x
        return _plain_call(
            "softmax", func, x, axis, lambda: _prepare(func, x, axis, *_NONE4)
        )
    return _prepare(func, x, axis, where, temperature, dtype, xp)


_NONE4 = (None, None, None, None)


def _plain_call(
    family: str, func: str, x: Any, axis: Any, full: Callable[[], Call]
) -> Call:
    """The :class:`Call` of a plain call from the cached facts of ``x``'s key, or ``full()``.

    ``full()`` runs every check; its facts are cached (per ``family``, the
    functions that derive the same facts) only after it has passed.
    """
    key = _plain_key(x)
    if key is None:
        return full()
    facts = _PLAIN.get((family, *key))
    if facts is not None:
        ns, out_dtype, compute = facts
        shape = tuple(x.shape)
        axes = _cached_axes(func, axis, len(shape))
        # positional, in Call's field order (no where, temperature or b):
        # on small arrays this path is the whole cost of validation
        return Call(
            func, x, ns, shape, axes, None, None, None, out_dtype, compute, key[2]
        )
    call = full()
    _PLAIN[(family, *key)] = (call.xp, call.out_dtype, call.compute_dtype)
    return call


def _prepare(
    func: str, x: Any, axis: Any, where: Any, temperature: Any, dtype: Any, xp: Any
) -> Call:
    arr, ns = as_array(func, x, xp)
    out_dtype = output_dtype(func, ns, arr.dtype, dtype, device(arr), complex_ok=False)
    compute = compute_dtype(ns, out_dtype)
    shape = tuple(arr.shape)
    return _checked_call(
        func, arr, ns, shape, axis, where, out_dtype, compute, temperature=temperature
    )


def _checked_call(
    func: str,
    arr: Array,
    ns: Namespace,
    shape: tuple[Any, ...],
    axis: Any,
    where: Any,
    out_dtype: Any,
    compute: Any,
    *,
    temperature: Any = None,
    b: Array | None = None,
) -> Call:
    """The :class:`Call` once ``axis``, ``where`` and ``temperature`` pass their checks."""
    dev = device(arr)
    return Call(
        func=func,
        x=arr,
        xp=ns,
        shape=shape,
        axes=_axes(func, axis, len(shape)),
        where=where_mask(func, where, ns, shape, dev),
        temperature=_temperature(func, temperature, ns, shape, dev, compute),
        b=b,
        out_dtype=out_dtype,
        compute_dtype=compute,
        device=dev,
    )


def prepare_logsumexp(
    x: Any,
    axis: Any,
    b: Any,
    where: Any,
    dtype: Any,
    xp: Any,
    *,
    func: str = "logsumexp",
) -> Call:
    """Validate the arguments of logsumexp (or ``func``); ``x`` and ``b`` are broadcast jointly.

    In steps: ``b`` checked (:func:`_weights`), broadcast jointly with ``x``
    (:func:`_broadcast_jointly`), the two promoted together
    (:func:`_promoted_dtype`), then the output dtype and the compute dtype of
    the accuracy policy (:func:`softmax_xp._call.lse_compute_dtype`), which the
    weights are cast to. ``x`` itself is neither cast nor broadcast here: the
    core masks it first.
    """
    if b is None and where is None and dtype is None and xp is None:
        return _plain_call(
            func, func, x, axis, lambda: _prepare_logsumexp(func, x, axis, *_NONE4)
        )
    return _prepare_logsumexp(func, x, axis, b, where, dtype, xp)


def _prepare_logsumexp(
    func: str, x: Any, axis: Any, b: Any, where: Any, dtype: Any, xp: Any
) -> Call:
    arr, ns = as_array(func, x, xp)
    dev = device(arr)
    weights = None if b is None else _weights(func, b, arr, ns, dev)
    shape, weights = _broadcast_jointly(func, ns, arr, weights)
    promoted = _promoted_dtype(ns, arr.dtype, weights, dev)
    out_dtype = output_dtype(func, ns, promoted, dtype, dev, complex_ok=True)
    compute = lse_compute_dtype(ns, out_dtype, dev)
    if weights is not None:
        weights = _as_compute(ns, weights, shape, compute, dev)
    return _checked_call(
        func, arr, ns, shape, axis, where, out_dtype, compute, b=weights
    )


def _weights(func: str, b: Any, arr: Array, ns: Namespace, dev: Any) -> float | Array:
    """``b`` as a Python float (weakly typed, as in array API promotion) or an array of ``ns``."""
    if isinstance(b, numbers.Real) and not is_array(b):
        try:
            return float(b)
        except OverflowError as err:
            msg = f"b={describe(b)} is beyond the range of a float"
            raise fail(ValueError, func, msg) from err
    weights = _same_namespace_array(func, "b", b, ns, dev)
    kind = dtype_kind(ns, weights.dtype)
    if kind is None:
        msg = f"b={describe(b)} has the unsupported dtype {weights.dtype}"
        raise fail(TypeError, func, msg)
    # checked before promotion, which would turn the result complex
    if kind == "complex floating" and dtype_kind(ns, arr.dtype) != "complex floating":
        msg = (
            f"b={describe(b)} is complex but x is real (dtype {arr.dtype}); "
            "complex weights need complex x"
        )
        raise fail(TypeError, func, msg)
    return weights


def _broadcast_jointly(
    func: str, ns: Namespace, arr: Array, weights: float | Array | None
) -> tuple[tuple[Any, ...], float | Array | None]:
    """The shape ``x`` and ``b`` broadcast to, and array weights broadcast to it."""
    if weights is None or isinstance(weights, float):
        return tuple(arr.shape), weights
    joint = _broadcast_shape(tuple(arr.shape), tuple(weights.shape))
    if joint is None:
        msg = (
            f"b of shape {tuple(weights.shape)} does not broadcast with "
            f"x of shape {tuple(arr.shape)}"
        )
        raise fail(ValueError, func, msg)
    if tuple(weights.shape) != joint:
        weights = ns.broadcast_to(weights, joint)
    return joint, weights


def _promoted_dtype(
    ns: Namespace, x_dtype: Any, weights: float | Array | None, dev: Any
) -> Any:
    """The dtype of ``x`` and array weights promoted together (a float ``b`` changes nothing).

    Integers and bools become the default float first: the standard defines no
    promotion across kinds.
    """
    if weights is None or isinstance(weights, float):
        return x_dtype
    default = default_float(ns, dev)

    def floating(dt: Any) -> Any:
        return default if dtype_kind(ns, dt) in ("bool", "integral") else dt

    return ns.result_type(floating(x_dtype), floating(weights.dtype))


def _as_compute(
    ns: Namespace,
    weights: float | Array,
    shape: tuple[Any, ...],
    compute: Any,
    dev: Any,
) -> Array:
    """The weights as an array of the call's shape (a float: filled) in the compute dtype."""
    if isinstance(weights, float):
        return ns.full(shape, weights, dtype=compute, device=dev)
    return ns.astype(weights, compute)
