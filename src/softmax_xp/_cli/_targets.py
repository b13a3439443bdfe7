"""The backends and devices this machine offers, for ``info`` and ``check``.

Every optional library is imported here, when a subcommand asks, and never at
the import of the package. A library that is missing or fails to import is
reported as such, with the reason, and the rest goes on.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "LIBRARIES",
    "Library",
    "Target",
    "describe_error",
    "library",
    "targets",
]

# what `info` lists: (import name, distribution name, role)
LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("numpy", "numpy", "backend"),
    ("array_api_compat", "array-api-compat", "dependency"),
    ("scipy", "scipy", "peer"),
    ("torch", "torch", "backend"),
    ("jax", "jax", "backend"),
    ("dask", "dask", "backend"),
    ("cupy", "cupy", "backend"),
    ("array_api_strict", "array-api-strict", "backend"),
    ("ml_dtypes", "ml_dtypes", "dtypes"),
)
BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "dask", "cupy")


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for one table cell."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass(frozen=True)
class Library:
    name: str
    version: str | None  # None: not importable
    status: str  # "ok", "not installed", "import failed: ..."
    module: Any = None


def _module(name: str) -> Any:
    # through import_module so that the optional libraries' types stay out of
    # the type check
    return importlib.import_module(name)


def library(name: str, dist: str) -> Library:
    """Import ``name`` and say how that went."""
    if importlib.util.find_spec(name) is None:
        return Library(name, None, "not installed")
    try:
        module = _module(name)
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return Library(name, None, f"import failed ({describe_error(exc)})")
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return Library(name, str(version), "ok", module)


@dataclass(frozen=True)
class Target:
    """One backend on one device: how to put a NumPy array there and back."""

    backend: str
    device: str
    put: Callable[[np.ndarray], Any]  # a NumPy array (any dtype) on this device
    to_numpy: Callable[[Any], np.ndarray]
    has_dtype: Callable[[str], bool]
    default_float: str  # the dtype integer input must give (the namespace's default)

    @property
    def label(self) -> str:
        return f"{self.backend} ({self.device})"


def _always(_name: str) -> bool:
    return True


def _numpy_targets() -> list[Target]:
    return [
        Target("numpy", "cpu", np.array, np.asarray, _always, "float64"),
    ]


def _strict_targets(xp: Any) -> list[Target]:
    dev = xp.__array_namespace_info__().default_device()

    def put(a: np.ndarray) -> Any:
        return xp.asarray(a, device=dev)

    def to_numpy(a: Any) -> np.ndarray:
        return np.from_dlpack(a)

    def has(name: str) -> bool:
        return hasattr(xp, name)

    name = str(dev).removeprefix("array_api_strict.Device(").rstrip(")").strip("'")
    return [Target("array_api_strict", name, put, to_numpy, has, "float64")]


def _torch_targets(torch: Any) -> list[Target]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    default = str(torch.get_default_dtype()).removeprefix("torch.")

    def to_numpy(a: Any) -> np.ndarray:
        return np.asarray(a.detach().cpu())

    out = []
    for dev in devices:

        def put(a: np.ndarray, dev: str = dev) -> Any:
            return torch.asarray(a.copy(), device=dev)

        def has(name: str, dev: str = dev) -> bool:
            return not (dev == "mps" and name == "float64")

        out.append(Target("torch", dev, put, to_numpy, has, default))
    return out


def _jax_devices(jax: Any) -> list[Any]:
    found = list(jax.devices())
    for platform in ("cpu", "gpu"):
        with contextlib.suppress(RuntimeError):  # that platform is not here
            found += [d for d in jax.devices(platform) if d not in found]
    return found


def _jax_targets(jax: Any) -> list[Target]:
    x64 = bool(jax.config.jax_enable_x64)

    def to_numpy(a: Any) -> np.ndarray:
        return np.asarray(a)

    def has(name: str) -> bool:
        return x64 or name not in {"float64", "int64"}

    out = []
    for d in _jax_devices(jax):

        def put(a: np.ndarray, d: Any = d) -> Any:
            return jax.device_put(a, d)

        out.append(
            Target(
                "jax", f"{d.platform}:{d.id}", put, to_numpy, has,
                "float64" if x64 else "float32",
            )
        )  # fmt: skip
    return out


def _dask_targets(da: Any) -> list[Target]:
    def put(a: np.ndarray) -> Any:
        # about two chunks per axis: the reductions really cross blocks
        return da.from_array(a, chunks=tuple(max(1, (s + 1) // 2) for s in a.shape))

    def to_numpy(a: Any) -> np.ndarray:
        return np.asarray(a.compute())

    return [Target("dask", "cpu (threads)", put, to_numpy, _always, "float64")]


def _cupy_targets(cp: Any) -> list[Target]:
    out = []
    for i in range(cp.cuda.runtime.getDeviceCount()):

        def put(a: np.ndarray, i: int = i) -> Any:
            with cp.cuda.Device(i):
                return cp.asarray(a)

        def to_numpy(a: Any) -> np.ndarray:
            return np.asarray(a.get())

        out.append(Target("cupy", f"cuda:{i}", put, to_numpy, _always, "float64"))
    return out


_MAKERS: dict[str, tuple[str, Callable[[Any], list[Target]]]] = {
    "numpy": ("numpy", lambda _m: _numpy_targets()),
    "array_api_strict": ("array_api_strict", _strict_targets),
    "torch": ("torch", _torch_targets),
    "jax": ("jax", _jax_targets),
    "dask": ("dask.array", _dask_targets),
    "cupy": ("cupy", _cupy_targets),
}


def targets(backend: str) -> tuple[list[Target], str | None]:
    """The devices ``backend`` offers here, or ``([], why not)``."""
    module_name, make = _MAKERS[backend]
    if importlib.util.find_spec(backend) is None:
        return [], "not installed"
    try:
        module = _module(module_name)
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return [], f"import failed ({describe_error(exc)})"
    try:
        found = make(module)
    except Exception as exc:  # noqa: BLE001 - e.g. cupy installed without a GPU
        return [], f"no usable device ({describe_error(exc)})"
    if not found:
        return [], "no device found"
    return found, None
