"""Backend matrix shared by every test module.

``SOFTMAX_XP_BACKENDS`` (comma separated) selects the backends a run covers;
each nox session sets it to one backend. Without it every backend that imports
here is covered. A backend that was asked for by name but does not import is
an error, not a skip, so that a session never passes by testing nothing.
GPU backends (``cupy``, ``torch-cuda``, ``jax-gpu``) skip cleanly when the
machine has no GPU.

Tests take the ``be`` fixture (a :class:`Backend`) and create every array
through ``be.asarray`` so that the non-default-device cases really put their
inputs on that device.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from softmax_xp._backends import BACKENDS, by_name, matrix, targets

# JAX must be configured before its first array exists: float64 is part of the
# matrix, and the contract is tested on it.
if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
    # nox points every JAX session at one persistent compilation cache: most of
    # tests-jax's time is XLA compiling the same small kernels run after run
    if os.environ.get("SOFTMAX_XP_JAX_CACHE"):
        jax.config.update(
            "jax_compilation_cache_dir", os.environ["SOFTMAX_XP_JAX_CACHE"]
        )
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

# the matrix, from the registry of backends: each backend and its variants on
# other devices (array_api_strict-device1; torch-cuda, jax-gpu need a GPU)
CPU_BACKENDS = matrix(gpu=False)
GPU_BACKENDS = matrix(gpu=True)


def _installed(name: str) -> bool:
    return by_name(name).installed()


def _selected() -> tuple[list[str], bool]:
    raw = os.environ.get("SOFTMAX_XP_BACKENDS", "").strip()
    if not raw:
        names = [n for n in CPU_BACKENDS if _installed(n)]
        # cupy is always listed so that a CPU run reports it as skipped.
        return [*names, "cupy"], False
    names = [n.strip() for n in raw.split(",") if n.strip()]
    # the array-api-strict session also covers the non-default device case
    if "array_api_strict" in names and "array_api_strict-device1" not in names:
        names.append("array_api_strict-device1")
    unknown = sorted(set(names) - set(CPU_BACKENDS) - set(GPU_BACKENDS))
    if unknown:
        msg = f"SOFTMAX_XP_BACKENDS names unknown backends: {unknown}"
        raise pytest.UsageError(msg)
    return names, True


SELECTED, EXPLICIT = _selected()

# Each backend's fast-path module is tested by its own file, which may build
# that backend's arrays at import time: collected only where the backend is.
collect_ignore = [
    f"test_fast_{b.fast_path}.py"
    for b in BACKENDS
    if b.fast_path is not None and b.name not in SELECTED
]
# the cluster tests import distributed and zarr, which the tests-dask session
# installs; a run that did not name its backends skips the file without them
if "dask" not in SELECTED or (
    not EXPLICIT
    and not all(importlib.util.find_spec(m) for m in ("distributed", "zarr"))
):
    collect_ignore.append("test_distributed.py")
# Sharded JAX needs 4 devices, which XLA makes on the CPU only when XLA_FLAGS
# asks before JAX starts: that file runs in its own session (nox -s
# tests-jax-sharding, which names it) and is collected elsewhere only with the flag.
if (
    "jax" not in SELECTED
    or "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
):
    collect_ignore.append("test_jax_sharding.py")
# The GPU kernels' files (docs/gpu.md) run their CPU modes in the session made
# for them (nox -s tests-gpu-logic sets SOFTMAX_XP_GPU_LOGIC=1), and the kernels
# themselves in runs that select a GPU backend; the CPU backends' sessions leave
# them out (interpreting the kernels takes minutes).
if os.environ.get("SOFTMAX_XP_GPU_LOGIC") != "1" and not set(SELECTED) & set(
    GPU_BACKENDS
):
    collect_ignore += ["test_gpu_triton.py", "test_gpu_cupy.py", "test_gpu_pallas.py"]


@dataclass
class Backend:
    """One backend of the matrix, with helpers that keep tests backend-neutral."""

    name: str
    xp: ModuleType  # the array-api-compat namespace (array_api_strict itself)
    native: ModuleType  # what users import: numpy, torch, jax.numpy, dask.array, ...
    device: Any = None
    float_dtypes: dict[str, Any] = field(default_factory=dict)
    lazy: bool = False  # True on Dask: nothing may be computed by our calls
    jax: bool = False
    default_float: Any = None

    def asarray(self, obj: Any, dtype: Any = None) -> Any:
        """``obj`` (nested lists, NumPy arrays) as an array of this backend."""
        if isinstance(dtype, str):
            dtype = self.dtype(dtype)
        if isinstance(obj, np.ndarray) and self.name == "dask":
            import dask.array as da

            arr = da.from_array(
                obj, chunks=tuple(max(1, (s + 1) // 2) for s in obj.shape) or ()
            )
            return arr if dtype is None else arr.astype(dtype)
        if self.device is None:
            return self.xp.asarray(obj, dtype=dtype)
        return self.xp.asarray(obj, dtype=dtype, device=self.device)

    def dtype(self, name: str) -> Any:
        """The dtype object of this backend called ``name`` (``"float32"``, ``"int64"``...)."""
        if name in self.float_dtypes:
            return self.float_dtypes[name]
        return getattr(self.xp, name)

    def to_numpy(self, a: Any) -> np.ndarray:
        """A NumPy copy of ``a`` (computing Dask arrays); half floats widened to float32."""
        name = self.name
        if name == "dask":
            a = a.compute()
        if name.startswith("torch"):
            import torch

            t = a.detach().cpu()
            if t.dtype == torch.bfloat16:
                t = t.to(torch.float32)
            return t.numpy().copy()
        if name == "cupy":
            return a.get()
        if name.startswith("array_api_strict"):
            import array_api_strict as xs

            a = (
                xs.asarray(a, device=xs.Device("CPU_DEVICE"))
                if self.device is not None
                else a
            )
            return np.asarray(a._array).copy()
        out = np.asarray(a)
        if out.dtype.kind == "V" or out.dtype.name == "bfloat16":
            out = out.astype(np.float32)
        return out.copy()

    def compute(self, a: Any) -> Any:
        """``a`` with any laziness resolved (Dask computes; others unchanged)."""
        return a.compute() if self.lazy else a

    def dtype_name(self, dt: Any) -> str:
        for k, v in self.float_dtypes.items():
            if v == dt:
                return k
        return str(dt).split(".")[-1]


def _make(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp

        dts = {"float32": np.float32, "float64": np.float64, "float16": np.float16}
        if importlib.util.find_spec("ml_dtypes"):
            import ml_dtypes

            dts["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
        dts = {k: np.dtype(v) for k, v in dts.items()}
        return Backend(
            name, xp, np, float_dtypes=dts, default_float=np.dtype(np.float64)
        )
    if name.startswith("array_api_strict"):
        import array_api_strict as xs

        dev = xs.Device("device1") if name.endswith("device1") else None
        dts = {"float32": xs.float32, "float64": xs.float64}
        return Backend(
            name, xs, xs, device=dev, float_dtypes=dts, default_float=xs.float64
        )
    if name in ("torch", "torch-cuda"):
        import array_api_compat.torch as xp
        import torch

        dev = None
        if name == "torch-cuda":
            if not any(t.device.startswith("cuda") for t in targets("torch")[0]):
                pytest.skip("torch-cuda: no CUDA device on this machine")
            dev = torch.device("cuda")
        dts = {
            "float32": torch.float32,
            "float64": torch.float64,
            "float16": torch.float16,
            "bfloat16": torch.bfloat16,
        }
        return Backend(
            name, xp, torch, device=dev, float_dtypes=dts, default_float=torch.float32
        )
    if name in ("jax", "jax-gpu"):
        import jax
        import jax.numpy as jnp

        dev = None
        if name == "jax-gpu":
            gpus = (
                [d for d in jax.devices() if d.platform == "gpu"]
                if jax.default_backend() == "gpu"
                else []
            )
            if not gpus:
                pytest.skip("jax-gpu: no GPU device on this machine")
            dev = gpus[0]
        dts = {
            "float32": jnp.float32,
            "float64": jnp.float64,
            "float16": jnp.float16,
            "bfloat16": jnp.bfloat16,
        }
        dts = {k: jnp.dtype(v) for k, v in dts.items()}
        return Backend(
            name,
            jnp,
            jnp,
            device=dev,
            float_dtypes=dts,
            jax=True,
            default_float=jnp.dtype(jnp.float64),
        )
    if name == "dask":
        import array_api_compat.dask.array as xp
        import dask.array as da

        dts = {k: np.dtype(k) for k in ("float32", "float64", "float16")}
        if importlib.util.find_spec("ml_dtypes"):  # NumPy chunks: bfloat16 as on NumPy
            import ml_dtypes

            dts["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
        return Backend(
            name,
            xp,
            da,
            float_dtypes=dts,
            lazy=True,
            default_float=np.dtype(np.float64),
        )
    if name == "cupy":
        found, why = targets("cupy")
        if not found:  # not installed (it needs a GPU), or no usable device
            pytest.skip(f"cupy: {why}")
        import array_api_compat.cupy as xp
        import cupy

        dts = {k: cupy.dtype(k) for k in ("float32", "float64", "float16")}
        return Backend(
            name, xp, cupy, float_dtypes=dts, default_float=cupy.dtype("float64")
        )
    msg = f"unknown backend {name!r}"
    raise ValueError(msg)


_CACHE: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    if name not in _CACHE:
        if name in CPU_BACKENDS and EXPLICIT and not _installed(name):
            msg = f"backend {name!r} was selected by SOFTMAX_XP_BACKENDS but does not import"
            raise RuntimeError(msg)
        _CACHE[name] = _make(name)
    return _CACHE[name]


@pytest.fixture(params=SELECTED)
def be(request: pytest.FixtureRequest) -> Backend:
    """The backend under test (see the module docstring)."""
    return get_backend(request.param)


@pytest.fixture
def xp(be: Backend) -> ModuleType:
    """The array namespace of the backend under test."""
    return be.xp


def backend_selected(name: str) -> bool:
    """Whether a backend takes part in this run (for backend-specific test modules)."""
    return name in SELECTED


def needs(name: str) -> Callable[[Any], Any]:
    """Mark a backend-specific test: it runs only in runs that select ``name``.

    Such tests are deselected (not skipped) elsewhere, so that a run's skips
    are only what this machine lacks (a GPU, a dtype a backend does not have).
    """
    return pytest.mark.needs_backend(name)


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    keep, drop = [], []
    for item in items:
        marks = [m.args[0] for m in item.iter_markers("needs_backend")]
        (drop if any(b not in SELECTED for b in marks) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
