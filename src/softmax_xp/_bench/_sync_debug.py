"""A pytest plugin for the GPU check: no host synchronisation inside our calls.

``pytest -p softmax_xp._bench._sync_debug`` (benchmarks/gpu_check.sh loads it)
wraps the public functions of softmax_xp so that each call runs under
``torch.cuda.set_sync_debug_mode("error")`` when torch has a CUDA device: a
call that synchronises with the host (``.item()``, ``bool(tensor)``, a copy to
the host, ``nonzero``...) raises there, and the test that made it fails. The
tests' own checks (results copied to the host to compare) run outside the
mode, so they do not trip it. The mode covers the forward calls; autograd's
backward runs later, outside them.

Nothing happens without torch or without a CUDA device. The wrappers are put
in place at ``pytest_configure``, before the test modules are imported, so a
module that does ``from softmax_xp import softmax`` gets the wrapped one too.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PUBLIC", "install", "pytest_configure", "sync_debug"]

PUBLIC = ("softmax", "log_softmax", "softmin", "logsumexp")


@contextmanager
def sync_debug(torch: Any) -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` inside, the previous mode after."""
    cuda = torch.cuda
    old = cuda.get_sync_debug_mode()
    cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        cuda.set_sync_debug_mode(old)


def install(sx: Any, torch: Any) -> list[str]:
    """Wrap ``sx``'s public functions; the names wrapped (none a second time)."""
    done = []
    for name in PUBLIC:
        f = getattr(sx, name)
        if getattr(f, "_sync_debug", False):
            continue

        def wrapped(*args: Any, _f: Callable[..., Any] = f, **kwargs: Any) -> Any:
            with sync_debug(torch):
                return _f(*args, **kwargs)

        functools.update_wrapper(wrapped, f)
        wrapped._sync_debug = True  # type: ignore[attr-defined]
        setattr(sx, name, wrapped)
        done.append(name)
    return done


def pytest_configure(config: Any) -> None:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return
    if not torch.cuda.is_available():
        return
    sx = importlib.import_module("softmax_xp")
    names = install(sx, torch)
    config.stash_sync_debug = names  # what the header below reports


def pytest_report_header(config: Any) -> str | None:
    names = getattr(config, "stash_sync_debug", None)
    if not names:
        return "softmax-xp sync debug: inactive (no CUDA device)"
    return f"softmax-xp sync debug: torch.cuda sync mode 'error' in {', '.join(names)}"
