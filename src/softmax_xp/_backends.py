"""The registry of backends: the one place that says which array libraries softmax-xp knows.

Per backend: its name (as ``SOFTMAX_XP_BACKENDS``, the demo, ``check`` and
``info`` write it; also the module whose presence says it is installed), the
module that makes its arrays, its distribution name, its fast-path module under
:mod:`softmax_xp._fast` (or none: the generic core), the nox session that
tests it, the variants the test matrix and the benchmark add (another device
of the same library), and how to find the devices it offers here.

Nothing optional is imported at the import of this module: the registry is
plain data, and :func:`targets` imports a library only when asked.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "Backend",
    "Library",
    "Target",
    "Variant",
    "by_name",
    "describe_error",
    "fast_path_modules",
    "library",
    "matrix",
    "targets",
]


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


@dataclass(frozen=True)
class Variant:
    """A backend on devices other than its default one, as the test matrix and
    the benchmark name it (``torch-cuda``, ``jax-gpu``, ``array_api_strict-device1``)."""

    name: str
    gpu: bool  # needs a GPU; skipped cleanly on a machine without one


@dataclass(frozen=True)
class Backend:
    """One array library softmax-xp runs on; its name is also its import name."""

    name: str
    session: str  # the nox session that tests it
    discover: Callable[[Any], list[Target]]  # its devices here, given array_module
    fast_path: str | None = None  # its module under softmax_xp._fast; None: generic
    array_module: str | None = None  # the module that makes its arrays (None: name)
    dist: str | None = None  # its distribution name, as ``info`` prints it (None: name)
    gpu: bool = False  # runs on a GPU only
    variants: tuple[Variant, ...] = ()

    def installed(self) -> bool:
        """Whether it is installed here (found, not imported)."""
        return importlib.util.find_spec(self.name) is not None


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for one table cell."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _import(name: str) -> Any:
    # through import_module so that the optional libraries' types stay out of
    # the type check
    return importlib.import_module(name)


@dataclass(frozen=True)
class Library:
    name: str
    version: str | None  # None: not importable
    status: str  # "ok", "not installed", "import failed (...)"
    module: Any = None


def library(name: str, dist: str) -> Library:
    """Import ``name`` and say how that went."""
    if importlib.util.find_spec(name) is None:
        return Library(name, None, "not installed")
    try:
        module = _import(name)
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return Library(name, None, f"import failed ({describe_error(exc)})")
    version = getattr(module, "__version__", None)
    if version is None:
        from importlib import metadata  # not at import: the package imports this module

        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "?"
    return Library(name, str(version), "ok", module)


# --- device discovery, one function per backend ------------------------------


def _always(_name: str) -> bool:
    return True


def _numpy_targets(_np: Any) -> list[Target]:
    return [Target("numpy", "cpu", np.array, np.asarray, _always, "float64")]


def _strict_targets(xp: Any) -> list[Target]:
    dev = xp.__array_namespace_info__().default_device()

    def put(a: np.ndarray) -> Any:
        return xp.asarray(a, device=dev)

    def to_numpy(a: Any) -> np.ndarray:
        # array-api-strict has no __array__; DLPack is the standard's way out
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


# --- the registry --------------------------------------------------------------

# NumPy, the standard's reference namespace, the other libraries, the GPU one last
BACKENDS: tuple[Backend, ...] = (
    Backend("numpy", "tests-numpy", _numpy_targets, fast_path="numpy"),
    Backend(
        "array_api_strict",
        "tests-strict",
        _strict_targets,
        dist="array-api-strict",
        variants=(Variant("array_api_strict-device1", gpu=False),),
    ),
    Backend(
        "torch",
        "tests-torch",
        _torch_targets,
        fast_path="torch",
        variants=(Variant("torch-cuda", gpu=True),),
    ),
    Backend(
        "jax",
        "tests-jax",
        _jax_targets,
        fast_path="jax",
        variants=(Variant("jax-gpu", gpu=True),),
    ),
    Backend(
        "dask", "tests-dask", _dask_targets, fast_path="dask", array_module="dask.array"
    ),
    Backend("cupy", "tests-cupy", _cupy_targets, fast_path="cupy", gpu=True),
)
_BY_NAME = {b.name: b for b in BACKENDS}
_VARIANT_OF = {v.name: b for b in BACKENDS for v in b.variants}


def by_name(name: str) -> Backend:
    """The backend called ``name``, or the backend a variant (``torch-cuda``) is of."""
    return _BY_NAME.get(name) or _VARIANT_OF[name]


def matrix(*, gpu: bool) -> tuple[str, ...]:
    """The test matrix's names that run on a GPU (``gpu=True``) or on the CPU, in
    the registry's order: each backend with its CPU variants, the GPU variants last."""
    out: list[str] = []
    for b in BACKENDS:
        if b.gpu == gpu:
            out += [b.name, *(v.name for v in b.variants if not v.gpu)]
    return (*out, *(v.name for b in BACKENDS for v in b.variants if gpu and v.gpu))


def fast_path_modules() -> dict[str, str]:
    """``library -> module under softmax_xp._fast`` for the backends that have one."""
    return {b.name: b.fast_path for b in BACKENDS if b.fast_path is not None}


def targets(backend: str) -> tuple[list[Target], str | None]:
    """The devices ``backend`` offers here, or ``([], why not)``."""
    spec = _BY_NAME[backend]
    if not spec.installed():
        return [], "not installed"
    try:
        module = _import(spec.array_module or spec.name)
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return [], f"import failed ({describe_error(exc)})"
    try:
        found = spec.discover(module)
    except Exception as exc:  # noqa: BLE001 - e.g. cupy installed without a GPU
        return [], f"no usable device ({describe_error(exc)})"
    if not found:
        return [], "no device found"
    return found, None
