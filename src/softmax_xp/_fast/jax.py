"""JAX: the generic core compiled once per static configuration.

Eagerly, every array operation of the generic core is dispatched (and, for a
new shape, compiled) one at a time. Wrapping the whole core in ``jax.jit`` per
configuration lets XLA fuse the contract handling into the reductions and turns
a call into one dispatch. Inside a caller's ``jit`` the inner ``jit`` is inlined.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax

from .. import _generic
from .._validation import Call

__all__ = ["run"]

_KERNELS: dict[str, Callable[..., Any]] = {
    "softmax": _generic.softmax,
    "log_softmax": _generic.log_softmax,
    "logsumexp": _generic.logsumexp,
}


@functools.cache
def _compiled(kind: str, static: Call, opts: tuple[tuple[str, Any], ...]) -> Any:
    """The jitted kernel for one configuration; arrays are passed separately."""
    kernel = _KERNELS[kind]
    options = dict(opts)

    def run(x: Any, where: Any, temperature: Any, b: Any) -> Any:
        call = dataclasses.replace(
            static, x=x, where=where, temperature=temperature, b=b, device=None
        )
        return kernel(call, **options)

    return jax.jit(run)


def run(kind: str, call: Call, **opts: Any) -> Any:
    """``_generic.<kind>(call, **opts)``, compiled per static configuration."""
    t = call.temperature
    if isinstance(t, float):
        # a traced scalar: one compilation serves every temperature value
        t = call.xp.asarray(t, dtype=call.compute_dtype)
    # the arrays leave the cache key; everything else in Call is static
    static = dataclasses.replace(
        call,
        x=None,
        where=None if call.where is None else _Present,
        temperature=None if t is None else _Present,
        b=None if call.b is None else _Present,
        device=None,
    )
    fn = _compiled(kind, static, tuple(sorted(opts.items())))
    return fn(call.x, call.where, t, call.b)


class _Present:
    """Marks an optional array argument as given, in the cache key."""


# force_generic() on JAX: the same jitted generic core (custom_jvp comes with the fast path)
run_generic = run
