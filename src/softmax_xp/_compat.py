"""The one place that talks to ``array_api_compat``, plus dtype facts the standard lacks.

Backend detection never imports a backend: ``array_api_compat`` only looks in
``sys.modules`` for libraries the caller has already imported.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import array_api_compat as _c

__all__ = [
    "Array",
    "Namespace",
    "array_namespace",
    "bits",
    "default_float",
    "device",
    "dtype_kind",
    "is_array",
    "is_lazy",
    "is_numpy",
    "library_of",
    "new_array_device",
]

Array = Any  # any array API array; a Protocol would buy little at runtime
Namespace = ModuleType

device = _c.device

# array_namespace costs tens of microseconds per call; the answer depends only
# on the array's type, so it is looked up once per type.
_NAMESPACE_BY_TYPE: dict[type, Namespace] = {}


def array_namespace(x: Any) -> Namespace:
    """The array-api-compat namespace of ``x`` (``TypeError`` if unsupported)."""
    cls = type(x)
    ns = _NAMESPACE_BY_TYPE.get(cls)
    if ns is None:
        ns = _c.array_namespace(x)
        _NAMESPACE_BY_TYPE[cls] = ns
    return ns


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of a library that array-api-compat knows."""
    return bool(_c.is_array_api_obj(x))


# Order matters only for readability: each predicate accepts the native module
# and its array-api-compat wrapper alike.
_LIBRARIES: tuple[tuple[str, Any], ...] = (
    ("numpy", _c.is_numpy_namespace),
    ("torch", _c.is_torch_namespace),
    ("jax", _c.is_jax_namespace),
    ("dask", _c.is_dask_namespace),
    ("cupy", _c.is_cupy_namespace),
    ("array_api_strict", _c.is_array_api_strict_namespace),
)


def library_of(xp: Any) -> str:
    """The library behind a namespace, e.g. ``"torch"`` for ``torch`` or its compat module."""
    for name, is_ns in _LIBRARIES:
        if is_ns(xp):
            return name
    return str(getattr(xp, "__name__", type(xp).__name__))


def is_numpy(xp: Namespace) -> bool:
    return bool(_c.is_numpy_namespace(xp))


def is_lazy(xp: Namespace) -> bool:
    """Whether values of this namespace's arrays may not be read without a compute."""
    return bool(_c.is_dask_namespace(xp) or _c.is_jax_namespace(xp))


def dtype_kind(xp: Namespace, dt: Any) -> str | None:
    """``"bool"``, ``"integral"``, ``"real floating"``, ``"complex floating"`` or ``None``.

    NumPy's own ``isdtype`` rejects the ``ml_dtypes`` extension types
    (``bfloat16``), so NumPy-like dtypes are classified by their ``kind``.
    """
    np_kind = getattr(dt, "kind", None)
    if isinstance(np_kind, str) and hasattr(dt, "itemsize"):
        if np_kind == "V" and getattr(dt, "name", "") in _ML_FLOATS:
            return "real floating"
        return {
            "b": "bool",
            "i": "integral",
            "u": "integral",
            "f": "real floating",
            "c": "complex floating",
        }.get(np_kind)
    for kind in ("bool", "integral", "real floating", "complex floating"):
        try:
            if xp.isdtype(dt, kind):
                return kind
        except Exception:  # noqa: BLE001 - not a dtype this namespace knows
            return None
    return None


_ML_FLOATS = frozenset({"bfloat16"})


def bits(xp: Namespace, dt: Any) -> int:
    """Storage width of a floating dtype in bits."""
    itemsize = getattr(dt, "itemsize", None)
    if isinstance(itemsize, int):
        return 8 * itemsize
    return int(xp.finfo(dt).bits)


def default_float(xp: Namespace, dev: Any) -> Any:
    """The namespace's default real floating dtype on ``dev``."""
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=dev)["real floating"]


def new_array_device(xp: Namespace, dev: Any) -> Any:
    """Where an array made for ``x`` from a Python value (or a probe) goes.

    ``dev``, x's device, except for a JAX array sharded over several devices:
    ``device(x)`` is then x's sharding, which fits x's shape only, so the value
    is replicated over x's mesh instead (a ``NamedSharding``), or left for
    ``jax.jit`` to place (other shardings).
    """
    if not _c.is_jax_namespace(xp) or len(getattr(dev, "device_set", ())) < 2:
        return dev
    import jax

    if isinstance(dev, jax.sharding.NamedSharding):
        return dev.update(spec=())  # same mesh and memory kind, replicated
    return None


def torch_compiling() -> bool:
    """Whether torch.compile is tracing this call (torch imported, and compiling).

    Code on every path checks it before what Dynamo cannot trace (a ContextVar,
    ``np.errstate``); importing torch for the question is never needed.
    """
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())
