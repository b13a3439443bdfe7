"""Helpers shared by several test modules (imported as ``from _helpers import ...``).

Fixtures defined here are made available to a module by importing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import softmax_xp as sx

# the one-pass functions with an axis and a distribution as output
FUNCS: dict[str, Callable[..., Any]] = {
    "softmax": sx.softmax,
    "log_softmax": sx.log_softmax,
    "softmin": sx.softmin,
}
KINDS = (*FUNCS, "logsumexp")


@pytest.fixture(autouse=True)
def fast_paths_on() -> Iterator[None]:
    """The fast path even under SOFTMAX_XP_FORCE_GENERIC=1; the generic side asks itself.

    Autouse in every module that imports it.
    """
    with sx.force_generic(False):
        yield


def generic(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on the generic core."""
    with sx.force_generic():
        return fn(*args, **kwargs)


@contextmanager
def jax_debug_nans() -> Iterator[None]:
    """``jax_debug_nans`` on inside the block, restored afterwards."""
    import jax

    previous = jax.config.jax_debug_nans
    jax.config.update("jax_debug_nans", True)
    try:
        yield
    finally:
        jax.config.update("jax_debug_nans", previous)


def assert_same_special_positions(a: np.ndarray, b: np.ndarray) -> None:
    """NaN, +inf, -inf and exact zeros at the same places in ``a`` and ``b``."""
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg="NaN positions")
    for v in (np.inf, -np.inf, 0.0):
        np.testing.assert_array_equal(a == v, b == v, err_msg=f"positions of {v}")
