"""``softmax-xp demo``: the stable formula against the naive one, on every backend.

Optional backends are looked up with ``importlib.util.find_spec`` and imported
only here, when the demo runs; one that fails to import or to compute is
reported on its line and the demo goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "run_demo"]

SMALL = [0.3, 2.9, 4.0]
LARGE = [1010.0, 1000.0, 990.0]


@dataclass(frozen=True)
class _Backend:
    name: str  # as printed, and the module that find_spec looks for
    make: Callable[[list[float]], Any]  # a Python list as this backend's array
    to_numpy: Callable[[Any], np.ndarray]


# Backends are imported through import_module so that their types (present or
# not, typed or not) never leak into the type check of this module.
def _module(name: str) -> Any:
    return importlib.import_module(name)


def _torch(values: list[float]) -> Any:
    return _module("torch").asarray(values)


def _torch_to_numpy(a: Any) -> np.ndarray:
    return np.asarray(a.detach().cpu())


def _jax(values: list[float]) -> Any:
    return _module("jax.numpy").asarray(values)


def _dask(values: list[float]) -> Any:
    # two chunks along the softmax axis: the reduction really crosses blocks
    return _module("dask.array").from_array(np.asarray(values), chunks=2)


def _dask_to_numpy(a: Any) -> np.ndarray:
    return np.asarray(a.compute())


def _strict(values: list[float]) -> Any:
    return _module("array_api_strict").asarray(values)


def _strict_to_numpy(a: Any) -> np.ndarray:
    # array-api-strict has no __array__; DLPack is the standard's way out
    return np.from_dlpack(a)


def _cupy(values: list[float]) -> Any:
    return _module("cupy").asarray(values)


def _cupy_to_numpy(a: Any) -> np.ndarray:
    return np.asarray(a.get())


BACKENDS: tuple[_Backend, ...] = (
    _Backend("torch", _torch, _torch_to_numpy),
    _Backend("jax", _jax, np.asarray),
    _Backend("dask", _dask, _dask_to_numpy),
    _Backend("array_api_strict", _strict, _strict_to_numpy),
    _Backend("cupy", _cupy, _cupy_to_numpy),
)


def _fmt(a: Any) -> str:
    return np.array2string(np.asarray(a), separator=" ")


def _reference(values: list[float]) -> np.ndarray:
    """softmax in float64 NumPy, written out, to compare every backend against."""
    x = np.asarray(values, dtype=np.float64)
    e = np.exp(x - x.max())
    return np.asarray(e / e.sum())


def _version(module_name: str) -> str:
    return str(getattr(_module(module_name), "__version__", "?"))


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _backend_line(backend: _Backend, softmax: Callable[..., Any]) -> str:
    """One line: this backend's softmax of LARGE, or why there is none."""
    label = f"  {backend.name:<17}"
    if importlib.util.find_spec(backend.name) is None:
        return f"{label}not installed"
    try:
        version = _version(backend.name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
        return f"{label}import failed ({_describe_error(exc)})"
    try:
        x = backend.make(LARGE)
        y = backend.to_numpy(softmax(x))
    except Exception as exc:  # noqa: BLE001 - e.g. cupy installed without a GPU
        return f"{label}failed ({_describe_error(exc)})"
    ref = _reference(LARGE)
    err = float(np.max(np.abs(y.astype(np.float64) - ref) / ref))
    return f"{label}{version:<12} {y.dtype!s:<8} {_fmt(y)}  max rel. error {err:.1e}"


def run_demo() -> int:
    """Print the demo; return the process exit status."""
    import softmax_xp as sx

    print(
        f"softmax-xp {sx.__version__}: softmax(x) = exp(x - max x) / sum exp(x - max x)"
    )
    print()
    print(f"NumPy {np.__version__}")
    for values in (SMALL, LARGE):
        text = f"softmax({values})"
        print(f"  {text:<32} -> {_fmt(sx.softmax(np.asarray(values)))}")
    x = np.asarray(LARGE)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(x) / np.sum(np.exp(x))
    print(f"  naive exp(x) / sum exp(x) on the same x -> {_fmt(naive)} (exp overflows)")
    print()
    print("Special values (no NaN comes out unless a NaN went in):")
    inf = np.inf
    cases: tuple[tuple[str, Callable[[], Any]], ...] = (
        ("softmax([inf, 1.0])", lambda: sx.softmax(np.asarray([inf, 1.0]))),
        ("softmax([-inf, -inf])", lambda: sx.softmax(np.asarray([-inf, -inf]))),
        (
            "softmax([1.0, 2.0], where=[False, False])",
            lambda: sx.softmax(
                np.asarray([1.0, 2.0]), where=np.asarray([False, False])
            ),
        ),
        ("logsumexp([0.0, -40.0])", lambda: sx.logsumexp(np.asarray([0.0, -40.0]))),
    )
    for text, call in cases:
        try:
            result = _fmt(call())
        except Exception as exc:  # noqa: BLE001 - the demo reports, never crashes
            result = f"failed ({_describe_error(exc)})"
        print(f"  {text:<42} -> {result}")
    print()
    print(
        f"The same call, softmax({LARGE}), on the other backends (their default float):"
    )
    for backend in BACKENDS:
        print(_backend_line(backend, sx.softmax))
    print()
    print("The special cases beside the peers (each library run now, on NumPy input):")
    peer_cases = _peer_cases(sx)
    if not any(peers for _title, _ours, peers in peer_cases):
        print("  (scipy, torch and jax are not installed here: no peer to show)")
    for title, ours, peers in peer_cases:
        print(f"  case: {title}")
        print(f"    {'softmax-xp':<30}{_outcome(ours)}")
        for label, call in peers:
            print(f"    {label:<30}{_outcome(call)}")
    return 0


HALF_ZEROS = 70_000


def _summary(a: Any) -> str:
    """A short text for one result: the values, or for a long row a digest."""
    y = np.asarray(a)
    if y.size <= 4:
        return _fmt(y)
    wide = y.astype(np.float64)
    nans = int(np.isnan(wide).sum())
    if nans:
        return f"{y.dtype}: {nans} of {y.size} values NaN"
    first = float(wide.reshape(-1)[0])
    same = "all" if bool(np.all(wide == first)) else "first"
    return f"{y.dtype}: {same} {first:.4g}, sum {float(np.sum(wide)):.4g}"


def _outcome(call: Callable[[], Any]) -> str:
    try:
        # a peer's overflow and invalid-value warnings are what the NaN in its
        # result already shows
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return _summary(call())
    except Exception as exc:  # noqa: BLE001 - the demo reports, never crashes
        return f"raised {_describe_error(exc)}"


Peer = tuple[str, Callable[[], Any]]


def _peer_calls(values: Any, mask: Any = None) -> list[Peer]:
    """scipy.special, torch and jax.nn softmax of ``values`` (a NumPy array).

    None of them drops masked entries the way ``where=`` does, except JAX's
    ``where``; for scipy and torch a mask is written as -inf, the usual idiom.
    """
    peers: list[Peer] = []
    masked = values if mask is None else np.where(mask, values, -np.inf)
    if importlib.util.find_spec("scipy") is not None:

        def scipy_call() -> Any:
            return _module("scipy.special").softmax(masked, axis=-1)

        label = "scipy.special.softmax" + (" (-inf)" if mask is not None else "")
        peers.append((label, scipy_call))
    if importlib.util.find_spec("torch") is not None:

        def torch_call() -> Any:
            torch = _module("torch")
            return _torch_to_numpy(torch.softmax(torch.asarray(masked), dim=-1))

        label = "torch.softmax" + (" (-inf)" if mask is not None else "")
        peers.append((label, torch_call))
    if importlib.util.find_spec("jax") is not None:

        def jax_call() -> Any:
            jnp = _module("jax.numpy")
            nn = _module("jax.nn")
            kw = {} if mask is None else {"where": jnp.asarray(mask)}
            return np.asarray(nn.softmax(jnp.asarray(values), axis=-1, **kw))

        label = "jax.nn.softmax" + (" (where=)" if mask is not None else "")
        peers.append((label, jax_call))
    return peers


def _peer_cases(sx: Any) -> list[tuple[str, Callable[[], Any], list[Peer]]]:
    inf = np.inf
    both_minus = np.asarray([-inf, -inf])
    plus = np.asarray([inf, 1.0])
    row = np.asarray([1.0, 2.0])
    none = np.asarray([False, False])
    zeros = np.zeros(HALF_ZEROS, dtype=np.float16)
    return [
        (
            "softmax([-inf, -inf])",
            lambda: sx.softmax(both_minus),
            _peer_calls(both_minus),
        ),
        ("softmax([inf, 1.0])", lambda: sx.softmax(plus), _peer_calls(plus)),
        (
            "softmax([1.0, 2.0]) with every entry masked",
            lambda: sx.softmax(row, where=none),
            _peer_calls(row, none),
        ),
        (
            (
                f"softmax of {HALF_ZEROS:,} float16 zeros (1/{HALF_ZEROS:,} = "
                f"{1 / HALF_ZEROS:.4g})"
            ),
            lambda: sx.softmax(zeros),
            _peer_calls(zeros),
        ),
    ]
