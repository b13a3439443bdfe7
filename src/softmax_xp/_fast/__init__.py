"""Optional fast paths, one module per backend, imported only for that backend's arrays.

Each module ``_fast/<library>.py`` exposes ``run(kind, call, **opts)`` with
``kind`` one of ``"softmax"``, ``"log_softmax"``, ``"logsumexp"`` and the
options of the matching function of :mod:`softmax_xp._generic`. It is an
optimisation of that function and must give its answer; for a configuration it
does not cover it returns ``NotImplemented`` and the generic core runs instead.

The choice is made once per namespace and cached, so a call on a small array
pays one dictionary lookup for it. A backend module is imported only when an
array of its library arrives (so the library is already imported).

:func:`force_generic` turns every fast path off, for tests and for users
chasing a discrepancy; so does the environment variable
``SOFTMAX_XP_FORCE_GENERIC=1`` for a whole process.

``SOFTMAX_XP_GPU_KERNELS=0`` turns off only the hand-written GPU kernels (the
Triton kernels of torch on CUDA, the CUDA C kernels of CuPy) for a process:
torch on CUDA then runs its chain of torch operations, CuPy the generic core.
It is read at import. (The Pallas kernels of JAX are off unless switched on:
``SOFTMAX_XP_PALLAS=1``, see ``jax.py``.)
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from .._backends import fast_path_modules
from .._compat import Namespace, library_of, torch_compiling

__all__ = ["force_generic", "generic_forced", "path_of", "runner_for"]

Runner = Callable[..., Any]

# libraries with a fast path, from the registry of backends (CuPy's: the fused
# CUDA kernels of _fast/cupy.py)
_MODULES = fast_path_modules()


def _env_flag(name: str, default: bool) -> bool:
    """An on/off environment variable: 1/true/yes/on, 0/false/no/off, else ``default``."""
    value = os.environ.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    return default


_FORCED_DEFAULT = _env_flag("SOFTMAX_XP_FORCE_GENERIC", default=False)
_FORCED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "softmax_xp_force_generic", default=_FORCED_DEFAULT
)

# SOFTMAX_XP_GPU_KERNELS=0: the GPU kernels off (read by _fast/torch.py and _fast/cupy.py)
GPU_KERNELS = _env_flag("SOFTMAX_XP_GPU_KERNELS", default=True)

_RUNNERS: dict[Namespace, Runner | None] = {}
_GENERIC_RUNNERS: dict[Namespace, Runner | None] = {}


@contextlib.contextmanager
def force_generic(enabled: bool = True) -> Iterator[None]:
    """Run every call in this block on the generic array-API core.

    The fast paths are optimisations that must give the generic answer; this
    switch is for tests and for chasing a discrepancy. It holds for the current
    thread (or asyncio task) only; ``SOFTMAX_XP_FORCE_GENERIC=1`` in the
    environment turns the fast paths off for the whole process.

    On JAX the generic core still runs under ``jax.jit`` (compiling changes no
    formula; eager JAX would compile each operation separately), but without
    the custom derivative rules of the fast path. ``jax.jit`` caches a trace per
    function: a caller's jitted function traced inside this block keeps the
    generic core after it (and the other way round), so jit a fresh function
    to compare the two.

    Examples
    --------
    >>> import numpy as np
    >>> import softmax_xp as sx
    >>> with sx.force_generic():
    ...     sx.softmax(np.asarray([0.0, 0.0]))
    array([0.5, 0.5])
    """
    if not isinstance(enabled, bool):
        msg = f"force_generic: enabled={enabled!r} must be a bool"  # type: ignore[unreachable]
        raise TypeError(msg)
    token = _FORCED.set(enabled)
    try:
        yield
    finally:
        _FORCED.reset(token)


def generic_forced() -> bool:
    """Whether the fast paths are switched off here."""
    if torch_compiling():
        # torch.compile cannot trace ContextVar.get (a graph break): inside a
        # compiled function only the process-wide setting holds
        return _FORCED_DEFAULT
    return _FORCED.get()


def _import(name: str) -> ModuleType:
    if name == "torch":
        # a plain import statement, which torch.compile traces; a first call
        # inside a compiled function would break the graph at import_module
        from . import torch as module

        return module
    return importlib.import_module(f"{__name__}.{name}")


def _load(xp: Namespace, attr: str) -> Runner | None:
    name = _MODULES.get(library_of(xp))
    if name is None:
        return None
    module = _import(name)
    runner: Runner | None = getattr(module, attr, None)
    return runner


def _cached(
    cache: dict[Namespace, Runner | None], xp: Namespace, attr: str
) -> Runner | None:
    # a lookup, not ``xp in cache``: torch.compile traces a dict lookup keyed by
    # a module but cannot trace the module's equality comparison
    try:
        return cache[xp]
    except KeyError:
        runner = cache[xp] = _load(xp, attr)
        return runner


def runner_for(xp: Namespace) -> Runner | None:
    """The fast path for ``xp``'s arrays, or ``None`` (cached per namespace)."""
    return _cached(_RUNNERS, xp, "run")


def generic_runner_for(xp: Namespace) -> Runner | None:
    """How ``xp`` runs the generic core when it is forced, if not plainly (JAX: jitted)."""
    return _cached(_GENERIC_RUNNERS, xp, "run_generic")


def path_of(xp: Namespace) -> str:
    """``"fast"`` or ``"generic"``: the path ``xp``'s arrays take here and now."""
    if generic_forced() or runner_for(xp) is None:
        return "generic"
    return "fast"
