"""Softmax on JAX arrays sharded across devices (``jax.sharding``).

Four devices are needed. On the CPU XLA makes them only when
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` is set before JAX
starts, so this file runs in its own session, ``nox -s tests-jax-sharding``
(``tests/conftest.py`` collects it only when that flag is set); with fewer
devices it fails at collection rather than skipping.

An ``(8, 16)`` array whose rows hold the contract's special cases (NaN,
``+inf`` entries on two devices, nothing left, a dominant entry, a large
offset, a fully masked row) is sharded with ``NamedSharding`` along the
reduced axis (the max and the sums cross devices), along the other axis (each
slice on one device), over a 2x2 mesh, and as a 3-D array reduced over a tuple
of axes. softmax, log_softmax, softmin and logsumexp (with and without
``keepdims``), eager and under ``jax.jit``, plain, masked with a scalar
temperature and masked with a sharded array temperature, in float32 and
float64, must:

- equal the same call on the unsharded array: bitwise where every slice lies
  on one device. Across devices XLA adds per-device partial sums, so the
  order of the additions changes and so do the last bits (measured: up to
  3 ulp relative apart). There both results must keep the contract's bounds
  against mpmath (docs/contract.md: softmax and log_softmax within 4 ulp relative of
  the exact result for ``fl(x - max)``, logsumexp within 2 ulp plus the
  cancellation allowance of ``tests/test_accuracy.py``) and have the same
  NaN, infinities and zeros;
- stay sharded: the output's ``NamedSharding`` is the input's (reductions:
  with the reduced axes dropped), each device keeps its own block;
- move no data: the compiled program has no ``all-gather``, ``all-to-all``
  or ``collective-permute``, only ``all-reduce``s no larger than the number
  of slices (the per-slice maximum and sums). :func:`test_gather_detector_fires`
  shows that this check fails on a program that gathers.

Gradients (``jax.grad`` of a sum of log-probabilities along the sharded axis),
``vmap`` and the generic core (``force_generic``) are checked the same way.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import (
    FUNCS,
    assert_same_special_positions,
    fast_paths_on,  # noqa: F401 - autouse: the fast path even when forced off
)
from _reference import mp_reference, rel_error, rounded_shift, to_dd, ulp, ulp_error
from conftest import needs
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import softmax_xp as sx

pytestmark = needs("jax")

N_DEVICES = 4
if jax.device_count() < N_DEVICES:
    _msg = (
        f"tests/test_jax_sharding.py needs {N_DEVICES} devices, JAX sees "
        f"{jax.device_count()}: run it with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=4 (nox -s tests-jax-sharding)"
    )
    raise RuntimeError(_msg)

NINF, INF, NAN = -np.inf, np.inf, np.nan
OUTPUTS = (*FUNCS, "logsumexp", "logsumexp-keepdims", "logsumexp-sign")
DTYPES = ("float32", "float64")
TEMPERATURE = 0.7

SOFTMAX_REL_ULPS = 4.0  # softmax, log_softmax: relative, against fl(x - max)
LOGSUMEXP_ULPS = 2.0
CANCELLATION_ULPS = 2.0  # per magnification of log1p(s')'s error (test_accuracy)


# ---------------------------------------------------------------------------
# Data: one row per case, placed so that the cases sit on different devices


def _data() -> np.ndarray:
    """(8, 16) float64. Columns 4k..4k+3 go to device k when columns are
    sharded; rows 2k, 2k+1 when rows are."""
    rng = np.random.default_rng(20240604)
    x = rng.normal(0.0, 3.0, (8, 16))
    x[1, 9] = NAN  # a NaN on the third device of the row
    x[2, [2, 14]] = INF  # +inf on the first and the last device: 1/2 each
    x[2, 7] = NINF
    x[3] = NINF  # nothing left
    x[5, :12] = NINF  # three devices hold nothing of this row
    x[6] += 1000.0  # a large offset, its maximum on the second device
    x[6, 5] = 1012.0
    x[7] = rng.uniform(-60.0, -5.0, 16)  # a dominant entry: the log1p form
    x[7, 11] = 0.0
    return x


def _mask() -> np.ndarray:
    keep = np.random.default_rng(11).random((8, 16)) < 0.75
    keep[1, 9] = True  # the NaN stays: a NaN row
    keep[2, [2, 14]] = True
    keep[4] = False  # fully masked
    keep[5, 13] = True
    keep[7, 11] = True
    return keep


def _with_garbage(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Masked entries hold values that must be ignored."""
    rng = np.random.default_rng(3)
    garbage = rng.choice([NAN, INF, NINF, 1e4], size=x.shape)
    return np.where(keep, x, garbage)


X = _data()
KEEP = _mask()


@dataclass(frozen=True)
class Layout:
    """How the data is shaped, placed over a mesh and reduced."""

    mesh_shape: tuple[int, ...]
    mesh_axes: tuple[str, ...]
    spec: tuple[str | None, ...]
    shape: tuple[int, ...]
    axis: int | tuple[int, ...]
    crosses: bool  # whether the reduced axes are split over devices

    @property
    def axes(self) -> tuple[int, ...]:
        return self.axis if isinstance(self.axis, tuple) else (self.axis,)

    def mesh(self) -> Mesh:
        devices = np.array(jax.devices()[:N_DEVICES]).reshape(self.mesh_shape)
        return Mesh(devices, self.mesh_axes)

    def sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh(), P(*self.spec))

    def reduced_sharding(self, *, keepdims: bool) -> NamedSharding:
        """The input's sharding with the reduced axes dropped (or unsplit with keepdims)."""
        if keepdims:
            spec = [None if i in self.axes else s for i, s in enumerate(self.spec)]
        else:
            spec = [s for i, s in enumerate(self.spec) if i not in self.axes]
        return NamedSharding(self.mesh(), P(*spec))

    def slices_per_device(self) -> int:
        """Slices whose statistics one device holds: the most an all-reduce may carry."""
        block = self.sharding().shard_shape(self.shape)
        return math.prod(n for i, n in enumerate(block) if i not in self.axes)


LAYOUTS = {
    # (8, 16), columns over 4 devices, softmax along the columns: every row
    # spans all four devices
    "reduced-axis-sharded": Layout((4,), ("d",), (None, "d"), (8, 16), 1, True),
    # rows over 4 devices, softmax along the columns: each row on one device
    "other-axis-sharded": Layout((4,), ("d",), ("d", None), (8, 16), 1, False),
    # both axes split over a 2x2 mesh
    "mesh-2x2": Layout((2, 2), ("a", "b"), ("a", "b"), (8, 16), 1, True),
    # 3-D: pairs of rows form 32-element slices, split over "b"
    "3-D": Layout((2, 2), ("a", "b"), ("a", None, "b"), (4, 2, 16), (1, 2), True),
}
OPTIONS = ("plain", "masked", "array-temperature")


@dataclass
class Case:
    """The NumPy inputs of one layout, option set and dtype."""

    layout: Layout
    option: str
    dtype: str
    x: np.ndarray  # in the dtype
    keep: np.ndarray | None
    t: np.ndarray | float | None  # array temperatures in the dtype

    @classmethod
    def make(cls, layout: str, option: str, dtype: str) -> Case:
        lay = LAYOUTS[layout]
        x, keep, t = X, None, None
        if option != "plain":
            keep = KEEP
            x = _with_garbage(X, KEEP)
            t = TEMPERATURE
        if option == "array-temperature":
            t = np.random.default_rng(5).uniform(0.5, 2.0, X.shape).astype(dtype)
            t = t.reshape(lay.shape)
        return cls(
            lay,
            option,
            dtype,
            x.astype(dtype).reshape(lay.shape),
            None if keep is None else keep.reshape(lay.shape),
            t,
        )

    def arrays(self, where: Any) -> tuple[Any, Any, Any]:
        """``(x, where, temperature)`` placed by ``where`` (a sharding or a device)."""
        x = jax.device_put(self.x, where)
        keep = None if self.keep is None else jax.device_put(self.keep, where)
        t = self.t
        if isinstance(t, np.ndarray):
            t = jax.device_put(t, where)
        return x, keep, t

    def u(self, output: str) -> np.ndarray:
        """What the function reduces, rounded in the dtype: ``x``, ``-x``, over t."""
        if output.startswith("logsumexp"):
            return self.x
        u = -self.x if output == "softmin" else self.x
        if self.t is None:
            return u
        with np.errstate(invalid="ignore", divide="ignore"):
            return u / np.asarray(self.t, dtype=self.dtype)


def _call_all(
    x: Any, keep: Any, t: Any, *, axis: int | tuple[int, ...]
) -> dict[str, Any]:
    """Every function on one input: the outputs by name."""
    kw: dict[str, Any] = {} if keep is None else {"where": keep}
    out = {name: f(x, axis=axis, temperature=t, **kw) for name, f in FUNCS.items()}
    out["logsumexp"] = sx.logsumexp(x, axis=axis, **kw)
    out["logsumexp-keepdims"] = sx.logsumexp(x, axis=axis, keepdims=True, **kw)
    _, out["logsumexp-sign"] = sx.logsumexp(x, axis=axis, return_sign=True, **kw)
    return out


# ---------------------------------------------------------------------------
# Checks


def _slices(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``(n_slices, slice_length)``: the reduced axes moved last and flattened."""
    rest = [i for i in range(a.ndim) if i not in axes]
    n = math.prod(a.shape[i] for i in axes)
    return np.transpose(a, rest + list(axes)).reshape(-1, n)


def _is_regular(row: np.ndarray, keep: np.ndarray) -> bool:
    """Finite and -inf kept entries, at least one finite: the formula's case."""
    kept = row[keep]
    return bool(
        np.isfinite(kept).any()
        and not (np.isnan(kept).any() or np.isposinf(kept).any())
    )


@functools.cache
def _references(case_key: tuple[str, str, str], output: str) -> tuple[Any, Any]:
    """``(exact, allowance)`` per element (softmax-like) or per slice (logsumexp).

    softmax and log_softmax are measured against the exact result for
    ``fl(x - max)`` on regular slices, as docs/contract.md states their bound; the
    special slices' exact results are the contract table's.
    """
    case = Case.make(*case_key)
    axes = case.layout.axes
    u = _slices(case.u(output), axes)
    keep = (
        np.ones(u.shape, dtype=bool) if case.keep is None else _slices(case.keep, axes)
    )
    kind = output.removesuffix("-keepdims").replace("softmin", "softmax")
    exact, allowance = [], []
    for row, k in zip(u, keep, strict=True):
        regular = _is_regular(row, k)
        if kind == "logsumexp":
            ref = mp_reference(row, k)
            exact.append(ref.logsumexp)
            extra = 0.0
            if regular:  # as tests/test_accuracy.py: m + log1p(s') may cancel
                log1p_s = mp_reference(rounded_shift(row, k), k).logsumexp
                ratio = float(ulp(log1p_s, case.dtype) / ulp(ref.logsumexp, case.dtype))
                extra = CANCELLATION_ULPS * max(ratio - 1.0, 0.0)
            allowance.append(extra)
        else:
            ref = mp_reference(rounded_shift(row, k) if regular else row, k)
            exact.append(getattr(ref, kind))
    dd = to_dd(np.array(exact, dtype=object))
    return dd, np.array(allowance)


def _assert_within_contract(case: Case, output: str, got: np.ndarray) -> None:
    if output == "logsumexp-sign":  # 1, 0 where nothing is left, NaN with NaN
        lse = _references(_key(case), "logsumexp")[0].hi
        sign = np.where(np.isnan(lse), NAN, np.where(lse == NINF, 0.0, 1.0))
        np.testing.assert_array_equal(got.reshape(-1), sign, err_msg=case.option)
        return
    exact, allowance = _references(_key(case), output)
    dtype = case.dtype
    if output.startswith("logsumexp"):
        actual = got.reshape(-1).astype(np.float64)
        err = ulp_error(actual, exact, dtype)
        bound = LOGSUMEXP_ULPS + allowance
    else:
        actual = _slices(got, case.layout.axes).astype(np.float64)
        err = rel_error(actual, exact, dtype)
        bound = np.full(err.shape, SOFTMAX_REL_ULPS)
    # exact values below the normal range: XLA on the CPU flushes them to 0
    tiny = float(np.finfo(dtype).tiny)
    small = (np.abs(exact.hi) < tiny) & (exact.hi != 0)
    with np.errstate(invalid="ignore"):  # inf - inf where both are -inf
        err = np.where(small, np.abs(actual - exact.hi) / tiny, err)
    bound = np.where(small, 1.0, bound)
    bad = ~(err <= bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - bound, -1.0)), err.shape)
        msg = (
            f"{output} {dtype} ({case.option}): element {i}: got {actual[i]!r}, "
            f"exact {exact.hi[i]!r}, error {err[i]:.3g} > {bound[i]:.3g}"
        )
        raise AssertionError(msg)


def _key(case: Case) -> tuple[str, str, str]:
    (name,) = (k for k, v in LAYOUTS.items() if v == case.layout)
    return name, case.option, case.dtype


def assert_sharded_like(out: Any, expected: NamedSharding) -> None:
    """``out`` is laid out as ``expected``: same mesh, same block on each device."""
    assert isinstance(out.sharding, NamedSharding), out.sharding
    assert out.sharding.mesh == expected.mesh
    assert out.sharding.is_equivalent_to(expected, out.ndim), (out.sharding, expected)
    block = expected.shard_shape(out.shape)
    shards = out.addressable_shards
    assert len(shards) == N_DEVICES
    assert {s.device for s in shards} == set(expected.mesh.devices.flat)
    want = expected.devices_indices_map(out.shape)
    for s in shards:
        assert s.data.shape == block
        assert s.index == want[s.device]


_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\S.*?)\s+(?P<op>all-gather|all-to-all|all-reduce|"
    r"collective-permute|collective-broadcast|reduce-scatter)(?:-start)?\("
)
_TENSOR = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def collectives(hlo: str) -> list[tuple[str, int]]:
    """``(op, elements of its largest operand)`` for each collective of an HLO text."""
    found = []
    for line in hlo.splitlines():
        m = _COLLECTIVE.search(line)
        if m is None:
            continue
        sizes = [
            math.prod(int(d) for d in dims.split(",") if d)
            for dims in _TENSOR.findall(m["shape"])
        ]
        found.append((m["op"], max(sizes, default=0)))
    return found


def assert_no_gather(hlo: str, *, max_elements: int) -> list[tuple[str, int]]:
    """No data moves between devices but all-reduces of at most ``max_elements``."""
    ops = collectives(hlo)
    moved = [(op, n) for op, n in ops if op != "all-reduce"]
    assert not moved, f"the program moves data between devices: {moved}"
    large = [(op, n) for op, n in ops if n > max_elements]
    assert not large, f"all-reduces larger than {max_elements} elements: {large}"
    return ops


def _compile(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, compiled.as_text()


# ---------------------------------------------------------------------------
# Tests


def _check_outputs(
    case: Case, got: dict[str, Any], want: dict[str, Any] | None
) -> None:
    """Sharded outputs against the contract and the unsharded ones (``want``)."""
    lay = case.layout
    for name in OUTPUTS:
        out = got[name]
        assert out.dtype == jnp.dtype(case.dtype)
        if name.startswith("logsumexp"):
            expected = lay.reduced_sharding(keepdims=name.endswith("keepdims"))
        else:
            expected = lay.sharding()
            assert not out.sharding.is_fully_replicated
        assert_sharded_like(out, expected)
        g = np.asarray(out)
        _assert_within_contract(case, name, g)
        if want is None:
            continue
        w = np.asarray(want[name])  # want: NumPy or JAX
        if lay.crosses:
            assert_same_special_positions(g, w)
            _assert_within_contract(case, name, w)
        else:
            np.testing.assert_array_equal(g, w, err_msg=name, strict=True)


# JAX compiles per shape, sharding and configuration (about 0.3 s each here):
# the full matrix under jit, where one program holds all five outputs, and
# each layout once eagerly (five compilations per call).
JIT_CASES = [
    *(
        (lay, opt, dt)
        for lay in LAYOUTS
        for opt in ("plain", "masked")
        for dt in DTYPES
    ),
    ("reduced-axis-sharded", "array-temperature", "float32"),
    ("reduced-axis-sharded", "array-temperature", "float64"),
    ("3-D", "array-temperature", "float64"),
]
EAGER_CASES = [
    *((lay, "masked", "float64") for lay in LAYOUTS),
    ("reduced-axis-sharded", "plain", "float32"),
]


@pytest.mark.parametrize(("layout", "option", "dtype"), JIT_CASES)
def test_jit_sharded_equals_unsharded(layout: str, option: str, dtype: str) -> None:
    case = Case.make(layout, option, dtype)
    lay = case.layout
    t = case.t

    def fn(x: Any, keep: Any, t_arr: Any) -> dict[str, Any]:
        # the Python-float temperature stays a Python float (jit would trace it)
        return _call_all(
            x, keep, t_arr if isinstance(t, np.ndarray) else t, axis=lay.axis
        )

    sharded = case.arrays(lay.sharding())
    compiled, hlo = _compile(fn, *sharded)
    ops = assert_no_gather(hlo, max_elements=lay.slices_per_device())
    # the maximum and the sums cross devices, or nothing does
    assert any(op == "all-reduce" for op, _ in ops) == lay.crosses, ops
    _check_outputs(case, compiled(*sharded), _jit_unsharded(fn, case))


_UNSHARDED: dict[tuple[Any, ...], dict[str, np.ndarray]] = {}


def _jit_unsharded(fn: Callable[..., Any], case: Case) -> dict[str, np.ndarray]:
    """``jax.jit(fn)`` on one device; layouts of the same shape share the result."""
    key = (case.layout.shape, case.layout.axis, case.option, case.dtype)
    if key not in _UNSHARDED:
        out = jax.jit(fn)(*case.arrays(jax.devices()[0]))
        _UNSHARDED[key] = {k: np.asarray(v) for k, v in out.items()}
    return _UNSHARDED[key]


@pytest.mark.parametrize(("layout", "option", "dtype"), EAGER_CASES)
def test_eager_sharded_equals_unsharded(layout: str, option: str, dtype: str) -> None:
    case = Case.make(layout, option, dtype)
    call = functools.partial(_call_all, axis=case.layout.axis)
    got = call(*case.arrays(case.layout.sharding()))
    _check_outputs(case, got, call(*case.arrays(jax.devices()[0])))


def test_gather_detector_fires() -> None:
    # the check of test_sharded_equals_unsharded on programs that move the data
    lay = LAYOUTS["reduced-axis-sharded"]
    x = jax.device_put(X, lay.sharding())
    everywhere = NamedSharding(lay.mesh(), P())

    def gathered(a: Any) -> Any:
        return sx.softmax(jax.lax.with_sharding_constraint(a, everywhere), axis=1)

    _, hlo = _compile(gathered, x)
    with pytest.raises(AssertionError, match="moves data"):
        assert_no_gather(hlo, max_elements=lay.slices_per_device())

    def summed(a: Any) -> Any:  # an all-reduce of every element
        return jnp.broadcast_to(jnp.sum(a * a, axis=1, keepdims=True), a.shape) + a

    _, hlo = _compile(summed, x)
    assert_no_gather(hlo, max_elements=lay.slices_per_device())  # per-row sums
    _, hlo = _compile(lambda a: a @ a.T, x)  # partial (8, 8) products all-reduced
    with pytest.raises(AssertionError, match="larger than"):
        assert_no_gather(hlo, max_elements=lay.slices_per_device())


def test_sharding_check_fires() -> None:
    # assert_sharded_like refuses a replicated array and one on a single device
    lay = LAYOUTS["reduced-axis-sharded"]
    for place in (NamedSharding(lay.mesh(), P()), jax.devices()[0]):
        with pytest.raises(AssertionError):
            assert_sharded_like(jax.device_put(X, place), lay.sharding())
    assert_sharded_like(jax.device_put(X, lay.sharding()), lay.sharding())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_stays_sharded(dtype: str) -> None:
    # d/dx of sum_j c_j log_softmax(x)_j along the sharded axis, over the
    # finite outputs: c_j - p_j sum(c) on rows with a finite maximum, 0 on
    # rows with +inf entries or nothing left and at masked entries
    lay = LAYOUTS["reduced-axis-sharded"]
    x64 = np.where(np.isnan(X), 0.0, X)  # no NaN: every gradient is finite
    x = x64.astype(dtype)
    keep = KEEP.copy()
    keep[0] = True
    c = np.random.default_rng(9).normal(size=x.shape).astype(dtype)
    rows_finite = np.array(
        [_is_regular(r.astype(np.float64), k) for r, k in zip(x, keep, strict=True)]
    )
    live = keep & (x > NINF) & rows_finite[:, None]
    # the loss sees the finite outputs only (the +inf row's -log 2 is a constant)
    used = live | (keep & np.isposinf(x))

    def loss(a: Any, w: Any) -> Any:
        ls = sx.log_softmax(a, axis=1, where=w)
        return jnp.sum(jnp.where(used, ls, 0.0) * c)

    grad = jax.grad(loss)
    sharded = [jax.device_put(v, lay.sharding()) for v in (x, keep)]
    compiled, hlo = _compile(grad, *sharded)
    g = compiled(*sharded)
    assert_no_gather(hlo, max_elements=lay.slices_per_device())
    assert_sharded_like(g, lay.sharding())
    assert g.dtype == jnp.dtype(dtype)
    eager = grad(*sharded)
    assert_sharded_like(eager, lay.sharding())

    xf = np.where(live, x.astype(np.float64), NINF)
    m = np.max(xf, axis=1, keepdims=True)
    e = np.exp(xf - np.where(np.isfinite(m), m, 0.0))
    p = e / np.maximum(e.sum(axis=1, keepdims=True), 1.0)
    cl = np.where(live, c.astype(np.float64), 0.0)
    ref = cl - p * cl.sum(axis=1, keepdims=True)
    eps = float(np.finfo(dtype).eps)
    tol = 16 * eps * float(np.abs(c).sum(axis=1).max())
    for got in (np.asarray(g), np.asarray(eager)):
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
        np.testing.assert_array_equal(got[~live], 0.0)


def test_vmap_over_sharded_rows() -> None:
    # vmap over the rows, softmax along each (sharded) row: the same program
    case = Case.make("reduced-axis-sharded", "masked", "float64")
    x, keep, _ = case.arrays(case.layout.sharding())

    def row(r: Any, k: Any) -> Any:
        return sx.log_softmax(r, where=k, temperature=TEMPERATURE)

    compiled, hlo = _compile(jax.vmap(row), x, keep)
    out = compiled(x, keep)
    assert_no_gather(hlo, max_elements=case.layout.slices_per_device())
    assert_sharded_like(out, case.layout.sharding())
    _assert_within_contract(case, "log_softmax", np.asarray(out))


# XLA:CPU's all-reduce of a maximum drops a NaN held by one device (and with
# it, sometimes, a larger number on that device: see the docs page). The fast
# path needs no NaN from the maximum (u - m carries it into every sum, and
# logsumexp hands the sum's NaN back to m); the generic core gets a maximum
# that adds the slice's NaNs to it (_fast/jax.py's _nan_carrying_max, its
# slice_max), without which the masked entries of a NaN row read NaN instead
# of 0 / -inf and return_sign gives 1, not NaN.
@pytest.mark.parametrize("option", ["plain", "masked"])
def test_generic_core_sharded(option: str) -> None:
    # the generic core (what force_generic runs) keeps the data in place too;
    # a fresh function, since jax.jit caches a trace per function
    case = Case.make("reduced-axis-sharded", option, "float64")
    lay = case.layout
    sharded = case.arrays(lay.sharding())
    t = case.t

    def fn(x: Any, keep: Any) -> dict[str, Any]:
        return _call_all(x, keep, t, axis=lay.axis)

    with sx.force_generic():
        compiled, hlo = _compile(fn, *sharded[:2])
    assert_no_gather(hlo, max_elements=lay.slices_per_device())
    _check_outputs(case, compiled(*sharded[:2]), None)


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_nan_beside_inf_on_other_devices(generic: bool, jit: bool) -> None:
    # a NaN and a +inf (or a large number) on different devices of one slice:
    # the slice is NaN whatever the maximum taken across devices gives
    lay = LAYOUTS["reduced-axis-sharded"]
    x = np.array(X)
    x[0, [9, 2]] = NAN, INF
    x[1, [1, 14]] = NAN, INF
    x[2, [5, 12]] = NAN, 1e300
    x[3, :] = NINF
    x[3, 6] = NAN
    keep = np.ones(x.shape, dtype=bool)
    keep[:4, [0, 15]] = False  # masked entries of a NaN row read 0 / -inf
    sharded = [jax.device_put(v, lay.sharding()) for v in (x, keep)]
    fn = functools.partial(_call_all, t=None, axis=1)
    with sx.force_generic(generic):
        outs = (jax.jit(fn) if jit else fn)(*sharded)
    for name, out in outs.items():
        got = np.asarray(out)[:4]
        if name.startswith("logsumexp"):
            assert np.isnan(got).all(), (name, got)
            continue
        fill = 0.0 if name in ("softmax", "softmin") else NINF
        np.testing.assert_array_equal(got[:, [0, 15]], fill, err_msg=name)
        assert np.isnan(got[:, 1:15]).all(), (name, got)


# device(x) of a sharded JAX array is its sharding, which fits x's shape only:
# Python values (lists of a broadcast shape) and the dtype= probe are placed
# replicated over x's mesh instead (_compat.new_array_device).
def test_python_values_with_sharded_x() -> None:
    # lists that broadcast to x: the same answer as arrays replicated over the mesh
    lay = LAYOUTS["reduced-axis-sharded"]
    x = jax.device_put(X, lay.sharding())
    everywhere = NamedSharding(lay.mesh(), P())
    keep = KEEP[0].tolist()  # (16,): one mask for every row
    t = np.linspace(0.5, 2.0, 8)[:, None]  # (8, 1): one temperature per row
    got = sx.softmax(x, axis=1, where=keep, temperature=t.tolist())
    want = sx.softmax(
        x,
        axis=1,
        where=jax.device_put(np.array(keep), everywhere),
        temperature=jax.device_put(t, everywhere),
    )
    assert_sharded_like(got, lay.sharding())
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)
    b = np.linspace(0.5, 1.5, 16)
    got = sx.logsumexp(x, axis=1, b=b.tolist())
    want = sx.logsumexp(x, axis=1, b=jax.device_put(b, everywhere))
    assert_sharded_like(got, lay.reduced_sharding(keepdims=False))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)


def test_dtype_with_sharded_x() -> None:
    # dtype= casts first: the answer for x in float32
    lay = LAYOUTS["reduced-axis-sharded"]
    x = jax.device_put(X, lay.sharding())
    f32 = jnp.dtype("float32")
    got = sx.log_softmax(x, axis=1, dtype=f32)
    assert got.dtype == f32
    assert_sharded_like(got, lay.sharding())
    want = sx.log_softmax(x.astype(f32), axis=1)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want), strict=True)
    got = sx.logsumexp(x, axis=1, keepdims=True, dtype=f32)
    assert_sharded_like(got, lay.reduced_sharding(keepdims=True))


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
def test_empty_input_keeps_its_device_and_sharding(generic: bool) -> None:
    # nothing to compute: the output still lives where x lives
    one = jax.devices()[1]
    mesh = Mesh(np.array(jax.devices()), ("d",))
    rows = NamedSharding(mesh, P("d"))
    with sx.force_generic(generic):
        for f in (sx.softmax, sx.log_softmax, sx.logsumexp):
            x = jax.device_put(np.zeros((8, 0)), one)
            assert f(x, axis=1).devices() == {one}, f.__name__
            x = jax.device_put(np.zeros((8, 0)), rows)
            out = f(x, axis=1)
            assert out.sharding.is_equivalent_to(rows, out.ndim), f.__name__


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_streaming_normaliser_across_devices(dtype: str) -> None:
    # a vocabulary split over the devices, normalised with the streaming API
    # inside shard_map: each device summarises its block, the (max, rest)
    # states (one pair per row and device) are all-gathered and combined, and
    # each device writes its own block of the softmax
    from functools import partial

    mesh = Mesh(np.array(jax.devices()), ("vocab",))
    spec = P(None, "vocab")
    x = X.astype(dtype)
    n_dev = len(jax.devices())

    @jax.jit
    @partial(jax.shard_map, mesh=mesh, in_specs=(spec, spec), out_specs=spec)
    def chunked(block: Any, keep: Any) -> Any:
        local = sx.logsumexp_state(block, axis=-1, where=keep, keepdims=True)
        m = jax.lax.all_gather(local.max, "vocab")
        r = jax.lax.all_gather(local.rest, "vocab")
        states = (sx.LogSumExpState(m[i], r[i]) for i in range(n_dev))
        return sx.log_softmax_from_state(
            block, sx.logsumexp_combine(*states), where=keep
        )

    sharding = NamedSharding(mesh, spec)
    args = (jax.device_put(x, sharding), jax.device_put(KEEP, sharding))
    out = chunked(*args)
    assert_sharded_like(out, sharding)
    # only the states travel: n_dev x rows numbers per all-gather
    ops = collectives(chunked.lower(*args).compile().as_text())
    assert ops, "expected the states to be gathered"
    assert all(n <= n_dev * x.shape[0] for _, n in ops), ops
    got = np.asarray(out)
    want = np.asarray(sx.log_softmax(x, axis=-1, where=KEEP))  # NumPy, one piece
    assert_same_special_positions(got, want)
    ok = np.isfinite(want)
    eps = float(np.finfo(dtype).eps)
    # both within the contract's 4 eps of the exact value (log_softmax),
    # measured on a scale of 1 + |value| as the one-pass tests do
    np.testing.assert_allclose(got[ok], want[ok], rtol=8 * eps, atol=8 * eps)


def test_large_logsumexp_sharded_on_kept_axis_has_no_collective() -> None:
    # above the one-pass size a single-device process checks for slices that
    # need a second pass with a lax.cond over all slices; with several devices
    # that check would be a collective on every call, so the one-pass form runs
    mesh = Mesh(np.array(jax.devices()), ("d",))
    rows = NamedSharding(mesh, P("d"))
    x = np.random.default_rng(7).standard_normal((512, 256)).astype(np.float32)
    x[3, :] = -40.0
    x[3, 0] = 0.0  # a slice with 1 <= S < 2: its low bits need the log1p form
    sharded = jax.device_put(x, rows)
    _, hlo = _compile(lambda a: sx.logsumexp(a, axis=-1), sharded)
    assert collectives(hlo) == []
    got = np.asarray(sx.logsumexp(sharded, axis=-1))
    want = np.asarray(sx.logsumexp(x, axis=-1))  # NumPy's answer, computed apart
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(np.float32).eps)
    # the tiny tail of row 3 survives: log1p(255 * exp(-40)), not 0
    assert got[3] > 0
