"""The PyTorch fast path (``softmax_xp._fast.torch``) against the generic core.

Both formulations of the fast path run here on CPU tensors: the eager one
(fused kernel, one read of its output, data-dependent fix-ups) and the
branch-free one that CUDA tensors and ``torch.compile`` take, switched on with
the module's ``branch_free()`` context manager. Every case is compared with the
generic core (``force_generic``) on the same input: NaN, +-inf and exact zeros
in the same places, finite values within a few units of the compute dtype.

The inputs are built to reach every fix-up: special rows (NaN, +inf, nothing
left), peaked rows whose ``log(S)`` is small (log_softmax recomputes them, a
few or most of the rows), and long rows and non-last axes, where the fused
kernel's row sum drifts and softmax renormalises. Accuracy against an
extended-precision reference checks that the drift is really corrected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _helpers import assert_same_special_positions
from conftest import needs
from hypothesis import given, settings
from hypothesis import strategies as st

import softmax_xp as sx

pytestmark = needs("torch")

NAN, INF = math.nan, math.inf
KINDS = ("softmax", "log_softmax", "softmin", "logsumexp")
EPS = {
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float32": 2.0**-23,
    "float64": 2.0**-52,
}
TINY = {"float32": 2.0**-126, "float64": 2.0**-1022}


@pytest.fixture(autouse=True)
def _fast_path_on() -> Iterator[None]:
    """These tests are about the fast path, even where the process forces generic."""
    with sx.force_generic(False):
        yield


@pytest.fixture(params=["eager", "branch-free"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which formulation of the fast path runs (the device one, on CPU tensors)."""
    from softmax_xp._fast import torch as fast_torch

    with fast_torch.branch_free(request.param == "branch-free"):
        yield str(request.param)


def _t(a: Any, dtype: str | None = None) -> Any:
    import torch

    t = torch.as_tensor(np.asarray(a))
    return t if dtype is None else t.to(getattr(torch, dtype))


def _np(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    return t.numpy().astype(np.float64)


def _rows(
    n: int, rng: np.random.Generator, scale: float = 3.0, which: str = "mixed"
) -> np.ndarray:
    """Ordinary and peaked rows, and one row per special case of the contract.

    ``which``: ``"mixed"`` (all of them; rows 6-7 peaked, 8-14 special),
    ``"finite"`` (no special row: the eager fix-ups run rather than the
    branch-free fallback), ``"peaked"`` (peaked rows only).
    """
    normal = rng.normal(0.0, scale, size=(6, n))
    peaked = rng.normal(0.0, 1.0, size=(2, n))
    peaked[:, 1] = 45.0  # log(S) ~ 1e-19: the log1p row of log_softmax
    if which == "peaked":
        return peaked
    if which == "finite":
        return np.concatenate([normal, peaked])
    special = np.array(
        [
            [NAN] + [1.0] * (n - 1),
            [INF, 1.0, INF] + [-INF] * (n - 3),
            [-INF] * n,
            [INF] * n,
            [-INF, 0.5, -INF] + [2.0] * (n - 3),
            [scale] * n,  # all tied
            [0.0, -40.0] + [-INF] * (n - 2),
        ]
    )
    return np.concatenate([normal, peaked, special])


def _place(
    rows: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]
) -> np.ndarray:
    """An array of ``shape`` whose slices along ``axes`` are the given rows (cycled)."""
    other = [i for i in range(len(shape)) if i not in axes]
    n = math.prod(shape[a] for a in axes)
    batch = math.prod(shape[i] for i in other)
    assert rows.shape[1] == n
    data = rows[np.arange(batch) % rows.shape[0]]
    data = data.reshape([shape[i] for i in other] + [shape[a] for a in axes])
    return np.moveaxis(data, list(range(len(other), len(shape))), list(axes))


# axis argument, shape, normalised axes
AXES = [
    (-1, (3, 4, 9), (2,)),
    (0, (9, 3, 4), (0,)),
    (1, (3, 9, 4), (1,)),
    ((1, 2), (2, 3, 5), (1, 2)),
    ((0, 2), (3, 2, 5), (0, 2)),  # non-adjacent: the generic core
    (None, (3, 5), (0, 1)),
]


def _compare(kind: str, fast: Any, generic: Any, out_dtype: str, x: Any) -> None:
    """Special values in the same places; finite values within a few ulp."""
    a, b = _np(fast), _np(generic)
    assert fast.dtype == generic.dtype
    assert_same_special_positions(a, b)
    ok = np.isfinite(a) & np.isfinite(b)
    compute = "float64" if out_dtype == "float64" else "float32"
    rtol = 8 * EPS[compute] + EPS.get(out_dtype, 0.0)
    atol = TINY[compute]  # entries that underflow (flushed to zero or not)
    if kind == "logsumexp":  # m + log1p(s'): an error of log1p's size in m's ulp
        xf = _np(x)
        atol += 8 * EPS[compute] * float(np.max(np.abs(xf[np.isfinite(xf)]), initial=1))
    err = np.abs(a[ok] - b[ok])
    bound = rtol * np.abs(b[ok]) + atol
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert (err <= bound).all(), (
        f"fast {a[ok][worst]!r} vs generic {b[ok][worst]!r} (bound {bound[worst]:.3g})"
    )


def _call(kind: str, x: Any, axis: Any, **kw: Any) -> Any:
    return getattr(sx, kind)(x, axis=axis, **kw)


def _check(kind: str, x: Any, axis: Any, out_dtype: str, **kw: Any) -> Any:
    import torch

    before = x.detach().clone()
    fast = _call(kind, x, axis, **kw)
    with sx.force_generic():
        generic = _call(kind, x, axis, **kw)
    _compare(kind, fast, generic, out_dtype, x)
    assert torch.equal(x.detach().isnan(), before.isnan())
    assert torch.equal(x.detach().nan_to_num(), before.nan_to_num())  # never modified
    return fast


# special rows in every dtype; the eager fix-ups (no special row) where they differ
ROWS_DTYPES = [
    *[("mixed", d) for d in ("float16", "bfloat16", "float32", "float64", "int32")],
    *[("finite", d) for d in ("float16", "float32", "float64")],
    *[("peaked", d) for d in ("float32", "float64")],
]


@pytest.mark.parametrize(("rows", "dtype"), ROWS_DTYPES)
@pytest.mark.parametrize(("axis", "shape", "axes"), AXES, ids=[str(a[0]) for a in AXES])
@pytest.mark.parametrize("kind", KINDS)
def test_matches_generic(
    path: str,
    kind: str,
    axis: Any,
    shape: tuple[int, ...],
    axes: Any,
    dtype: str,
    rows: str,
) -> None:
    rng = np.random.default_rng([KINDS.index(kind), len(shape), shape[0]])
    n = math.prod(shape[a] for a in axes)
    table = _rows(n, rng, which=rows)
    out = "float32" if dtype == "int32" else dtype  # torch's default float
    # one slice per call when there is one slice (axis=None)
    starts = range(len(table)) if math.prod(shape) == n else [0]
    for i in starts:
        data = _place(np.roll(table, -i, axis=0), shape, axes)
        if dtype == "int32":
            data = np.where(np.isfinite(data), np.round(data), 0.0)
        x = _t(data, dtype)
        _check(kind, x, axis, out)
        if kind == "logsumexp":
            _check(kind, x, axis, out, keepdims=True)


def _mask(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    keep = rng.random(shape) < 0.7
    keep[1] = False  # a fully masked row
    keep[0, 0] = False  # the row's NaN is masked away
    keep[9] = True
    keep[9, [0, 2]] = False  # the +inf row loses its +inf entries
    return keep


OPTIONS = ["where", "temperature", "temperature-tensor", "where+temperature-tensor"]
KIND_OPTIONS = [
    (k, o) for k in KINDS for o in OPTIONS if k != "logsumexp" or "temp" not in o
]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize(("kind", "option"), KIND_OPTIONS)
def test_masks_and_temperature(
    path: str, kind: str, axis: int, dtype: str, option: str
) -> None:
    rng = np.random.default_rng(7)
    data = _rows(10, rng)
    data[0, 0] = NAN
    keep = _mask(data.shape, rng)
    t_col = rng.uniform(0.2, 3.0, size=(data.shape[0], 1))
    if axis == 0:
        data, keep, t_col = data.T, keep.T, t_col.T
    kw: dict[str, Any] = {}
    if "where" in option:
        kw["where"] = _t(keep)
    if option == "temperature":
        kw["temperature"] = 0.37
    elif "temperature-tensor" in option:
        kw["temperature"] = _t(t_col)  # float64 for every dtype of x
    _check(kind, _t(data, dtype), axis, dtype, **kw)


@pytest.mark.parametrize("axis", [(1, 2), None])
@pytest.mark.parametrize("kind", KINDS)
def test_tuple_axes_with_mask_and_temperature(path: str, kind: str, axis: Any) -> None:
    """Merged axes: the mask and the temperature are merged the same way."""
    rng = np.random.default_rng(9)
    shape = (15, 3, 4)
    data = _place(_rows(12, rng), shape, (1, 2))
    keep = rng.random((15, 3, 1)) < 0.7  # broadcast along the last axis
    keep[1] = False
    kw: dict[str, Any] = {"where": _t(keep)}
    if kind != "logsumexp":
        kw["temperature"] = _t(rng.uniform(0.5, 2.0, size=(15, 1, 1)))
    for rows in (slice(None), slice(0, 8)):  # with special rows, and finite only
        x = _t(data[rows])
        kw_rows = {k: v[rows] for k, v in kw.items()}
        _check(kind, x, axis, "float64", **kw_rows)


@pytest.mark.parametrize("kind", KINDS)
def test_configurations_left_to_the_generic_core(kind: str) -> None:
    """axis=(), empty input, weighted/signed/complex logsumexp: the generic answer."""
    import torch

    from softmax_xp._fast import torch as fast_torch

    rng = np.random.default_rng(10)
    x = _t(_rows(5, rng))
    _check(kind, x, (), "float64")
    _check(kind, _t(np.zeros((3, 0))), -1, "float64")
    _check(kind, _t(np.zeros((0, 4))), -1, "float64")
    if kind == "logsumexp":
        b = _t(rng.uniform(-1.0, 2.0, size=x.shape))
        lse, sign = sx.logsumexp(x, axis=-1, b=b, return_sign=True)
        with sx.force_generic():
            lse_g, sign_g = sx.logsumexp(x, axis=-1, b=b, return_sign=True)
        _compare(kind, lse, lse_g, "float64", x)
        _compare(kind, sign, sign_g, "float64", x)
        z = x.nan_to_num(0.0, 5.0, -5.0).to(torch.complex128) * (1 + 0.5j)
        out = sx.logsumexp(z, axis=-1)
        with sx.force_generic():
            want = sx.logsumexp(z, axis=-1)
        assert torch.allclose(out, want, rtol=1e-14, atol=0)
    # the fast path itself declines them
    assert fast_torch.run(kind, _prepared(kind, x, ())) is NotImplemented


def _prepared(kind: str, x: Any, axis: Any) -> Any:
    from softmax_xp._validation import prepare, prepare_logsumexp

    if kind == "logsumexp":
        return prepare_logsumexp(x, axis, None, None, None, None)
    return prepare(kind, x, axis, None, None, None, None)


@pytest.mark.parametrize("rows", ["mixed", "finite", "peaked"])
@pytest.mark.parametrize(("axis", "shape", "axes"), AXES, ids=[str(a[0]) for a in AXES])
@pytest.mark.parametrize("kind", ["log_softmax", "logsumexp"])
def test_composites_in_many_slabs(
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    axis: Any,
    shape: tuple[int, ...],
    axes: Any,
    rows: str,
) -> None:
    """The slab loop of the exact composites, with slabs of a few elements."""
    from softmax_xp._fast import torch as fast_torch

    monkeypatch.setattr(fast_torch, "_SLAB", 20)  # 1 to 4 slices per slab
    rng = np.random.default_rng([len(shape), shape[0], 3])
    n = math.prod(shape[a] for a in axes)
    big = tuple(s * 3 if i not in axes else s for i, s in enumerate(shape))
    data = _place(_rows(n, rng, which=rows), big, axes)
    for dtype in ("float16", "float64"):
        x = _t(data, dtype)
        _check(kind, x, axis, dtype)
        if rows != "mixed":
            keep = rng.random(big) < 0.8
            _check(kind, x, axis, dtype, where=_t(keep))


def _finite_sum(y: Any) -> Any:
    import torch

    return torch.where(torch.isfinite(y), y, 0.0).sum()


def _grad_rows() -> tuple[np.ndarray, np.ndarray]:
    """float64 rows for gradients: finite, some -inf, all -inf, peaked, masked, +inf."""
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 1.0, size=(7, 5))
    x[1, [0, 3]] = -INF
    x[2] = -INF  # nothing left
    x[3, 2] = 30.0  # peaked: the log1p recomputation
    x[4, [1, 4]] = NAN  # masked away below
    x[6, [0, 2]] = INF  # constant outputs: zero gradient, as the generic core
    keep = np.ones(x.shape, dtype=bool)
    keep[4, [1, 4]] = False
    keep[5] = False  # fully masked
    return x, keep


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_finite_and_zero_where_required(path: str, kind: str) -> None:
    """As test_autodiff's contract: finite, 0 for masked entries and empty rows."""
    import torch

    x_np, keep = _grad_rows()
    w = _t(keep)
    t = _t(np.linspace(0.5, 2.0, 7)[:, None]).requires_grad_(True)
    zero_rows = [2, 5] if kind == "softmin" else [2, 5, 6]  # softmin: row 6 finite
    for axis, where, temp in ((-1, w, None), (-1, w, t), (0, w.T, None)):
        x = _t(x_np if axis == -1 else x_np.T).requires_grad_(True)
        kw: dict[str, Any] = {"where": where}
        if temp is not None:
            if kind == "logsumexp":
                continue
            kw["temperature"] = temp
        with torch.autograd.set_detect_anomaly(True):
            y = _call(kind, x, axis, **kw)
            grads = torch.autograd.grad(_finite_sum(y), [x] if temp is None else [x, t])
        gx = grads[0].numpy() if axis == -1 else grads[0].numpy().T
        assert np.isfinite(gx).all(), gx
        assert np.all(gx[~keep] == 0)
        assert np.all(gx[zero_rows] == 0)  # nothing left, +inf
        assert np.all(gx[1, [0, 3]] == 0)  # -inf entries
        if temp is not None:
            assert torch.isfinite(grads[1]).all()
            assert np.all(grads[1].numpy()[zero_rows] == 0)


GRAD_ROWS = [0, 1, 2, 3, 5, 6]  # gradcheck perturbs every input: not the NaN row


def _gradcheck_cases() -> Iterator[tuple[str, Callable[..., Any]]]:
    _, keep = _grad_rows()
    finite_rows = [0, 1, 3]

    def sel(y: Any) -> Any:
        return y[_t(np.isfinite(_np(y)))]  # the finite outputs only

    def w() -> Any:  # a tensor made when the case runs: collection needs no torch
        return _t(keep[GRAD_ROWS])

    for kind in ("softmax", "log_softmax", "softmin"):
        fn = getattr(sx, kind)
        yield f"{kind}-where", lambda a, fn=fn: sel(fn(a, where=w()))
        yield f"{kind}-axis0", lambda a, fn=fn: sel(fn(a.T, axis=0))
        yield f"{kind}-axes", lambda a, fn=fn: sel(fn(a[finite_rows[:2]], axis=None))
    yield "logsumexp-where", lambda a: sel(sx.logsumexp(a, axis=-1, where=w()))
    yield "logsumexp-axis0", lambda a: sx.logsumexp(a[finite_rows].T, axis=0)


GRADCHECK = dict(_gradcheck_cases())


@pytest.mark.parametrize("case", list(GRADCHECK))
def test_gradcheck(path: str, case: str) -> None:
    import torch

    x_np, _ = _grad_rows()
    x = _t(x_np[GRAD_ROWS]).requires_grad_(True)
    assert torch.autograd.gradcheck(
        GRADCHECK[case], (x,), eps=1e-6, atol=1e-8, rtol=1e-6
    )


@pytest.mark.parametrize(
    "case", ["softmax-where", "log_softmax-where", "softmin-axis0"]
)
def test_gradgradcheck(path: str, case: str) -> None:
    """Second derivatives (the eager path's backward is differentiable too)."""
    import torch

    x_np, _ = _grad_rows()
    x = _t(x_np[GRAD_ROWS]).requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        GRADCHECK[case], (x,), eps=1e-6, atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_requires_grad_gives_the_same_values(path: str, kind: str) -> None:
    """Under autograd (the eager path as an autograd.Function) the values do not change."""
    import torch

    rng = np.random.default_rng(5)
    for data in (
        _rows(9, rng),
        _rows(9, rng, which="finite"),
        _rows(9, rng, which="peaked"),
        rng.normal(0, 3, (4, 5000)),
    ):
        x = _t(data)
        plain = _call(kind, x, -1)
        xg = x.clone().requires_grad_(True)
        tracked = _call(kind, xg, -1)
        assert tracked.requires_grad
        _compare(kind, tracked, plain, "float64", x)
        (g,) = torch.autograd.grad(_finite_sum(tracked), xg)
        assert g.shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_input_and_output_never_share_memory(path: str, kind: str) -> None:
    """The in-place fix-ups work on our own buffers only, whatever the layout."""
    import torch

    rng = np.random.default_rng(6)
    finite = np.concatenate([_rows(9, rng, which="finite")] * 3)  # a few peaked rows
    views = {
        "mixed": _t(_rows(9, rng)),
        "contiguous": _t(finite),
        "transposed": _t(np.ascontiguousarray(finite.T)).T,
        "strided": _t(np.repeat(finite, 2, axis=1))[:, ::2],
        "strided-mixed": _t(np.repeat(_rows(9, rng), 2, axis=1))[:, ::2],
        "all-peaked": _t(_rows(9, rng, which="peaked").repeat(5, axis=0)),
        "long": _t(rng.normal(0, 3, (3, 6000)).astype(np.float32)),
    }
    for name, x in views.items():
        for axis in (-1, 0):
            before = x.clone()
            y = _call(kind, x, axis)
            assert torch.equal(x.isnan(), before.isnan()), name
            assert torch.equal(x.nan_to_num(), before.nan_to_num()), name
            assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
            y.add_(1)  # writing the result leaves the input alone
            assert torch.equal(x.nan_to_num(), before.nan_to_num()), name


def _extended() -> Any:
    if np.finfo(np.longdouble).eps > 2.0**-60:
        pytest.skip("no extended-precision long double on this platform")
    return np.longdouble


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
def test_long_rows_keep_the_contract_accuracy(
    path: str, kind: str, axis: int, dtype: str
) -> None:
    """4 ulp relative, against the exact result of fl(x - max) (test_accuracy's bound).

    The fused kernels' sequential row sums drift by more on these rows (up to
    ~14 ulp on rows of 20000, 10-30 ulp along axis 0); peaked rows test the
    log1p form.
    """
    ld = _extended()
    rng = np.random.default_rng(8)
    n = 20000 if axis == -1 else 4096
    data = rng.normal(0.0, 3.0, size=(6, n))
    data[4:] = rng.normal(0.0, 1.0, size=(2, n))
    data[4:, 7] = 30.0  # peaked
    data = data.astype(dtype)
    z = (data - data.max(axis=1, keepdims=True)).astype(ld)  # the rounded shift
    e = np.exp(z)
    # the log1p form: the maxima's 1 stays out of the sum
    k = np.sum(z == 0, axis=1, keepdims=True)
    s = np.where(z < 0, e, 0).sum(axis=1, keepdims=True) + (k - 1)
    exact = e / (1 + s) if kind == "softmax" else z - np.log1p(s)
    x = _t(data) if axis == -1 else _t(np.ascontiguousarray(data.T))
    got = _call(kind, x, axis).numpy()
    got = got if axis == -1 else got.T
    nonzero = np.abs(exact) >= TINY[dtype]
    rel = np.abs(got.astype(ld) - exact)[nonzero] / np.abs(exact[nonzero])
    worst = float(rel.max()) / EPS[dtype]
    assert worst <= 4.0, f"{worst:.2f} ulp"


# Dynamo warns that it traces through array-api-compat's (pure) lru_cache'd helpers
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_torch_compile_fullgraph() -> None:
    """A compiled function that calls ours traces into one graph, backward included.

    ``aot_eager`` traces exactly what inductor would get (graph breaks are
    Dynamo's) without generating C++; inductor itself compiles it too.
    """
    import torch

    def f(x: Any, w: Any, t: Any) -> Any:
        p = sx.softmax(x * 2, where=w, temperature=t)
        q = sx.log_softmax(x, axis=0)
        r = sx.logsumexp(x, axis=-1, where=w)
        # a Python-scalar temperature: its checks trace too (no np.errstate)
        s = sx.softmin(x, axis=None, temperature=0.5)
        return p.sum(-1) + q[:, 0] + r + s.sum(-1)

    x_np, keep = _grad_rows()
    x_np = np.where(keep, x_np, 0.0)  # no NaN: gradients of every entry
    w = _t(keep)
    t = _t(np.linspace(0.5, 2.0, len(x_np))[:, None])
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = _t(x_np).requires_grad_(True)
    got = compiled(x, w, t)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    x2 = _t(x_np).requires_grad_(True)
    want = f(x2, w, t)
    (g_want,) = torch.autograd.grad(want.sum(), x2)
    np.testing.assert_allclose(_np(got), _np(want), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(_np(g_got), _np(g_want), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_functorch_vmap_and_grad(kind: str) -> None:
    """Under vmap no value may be read back: the branch-free formulation runs."""
    import torch

    x_np, _ = _grad_rows()
    x = _t(np.where(np.isnan(x_np), 0.0, x_np))
    got = torch.func.vmap(lambda r: _call(kind, r, -1))(x)
    with sx.force_generic():
        want = _call(kind, x, -1)
    _compare(kind, got, want, "float64", x)
    g = torch.func.grad(lambda r: _finite_sum(_call(kind, r, -1)))(x)
    assert torch.isfinite(g).all()
    assert (g[2] == 0).all()  # nothing left


# ---------------------------------------------------------------------------
# issue 10: dtype= narrowing, gradients of masked entries, empty input


def _py(t: Any) -> list[float]:
    return _np(t).ravel().tolist()


def _softmax64(v: list[float]) -> list[float]:
    """Softmax in float64 Python math of finite values (independent reference)."""
    m = max(v)
    e = [math.exp(a - m) for a in v]
    return [a / sum(e) for a in e]


# (x, its dtype, dtype=, x as dtype= rounds it): values beyond the new range
# become +-inf, as IEEE rounding does (docs/decisions.md, "what a narrowing
# ``dtype=`` rounds")
NARROWING = [
    ([1e308, 0.0], "float64", "float32", [INF, 0.0]),
    ([-1e308, 0.0, 1.0], "float64", "float32", [-INF, 0.0, 1.0]),
    ([1e39, 1.0, -1e39], "float64", "bfloat16", [INF, 1.0, -INF]),
    ([3.4e38, 2.0**120, 0.0], "float32", "bfloat16", [INF, 2.0**120, 0.0]),
    ([7e4, 6.9e4, 0.0], "float32", "float16", [INF, INF, 0.0]),
    ([7e4, 6.9e4, 0.0], "float64", "float16", [INF, INF, 0.0]),
    ([-7e4, -6.9e4], "float64", "float16", [-INF, -INF]),
    ([-7e4, 1.0, 2.0], "float32", "float16", [-INF, 1.0, 2.0]),
    ([70000, 69999, 0], "int32", "float16", [INF, INF, 0.0]),
]


def _contract_row(kind: str, v: list[float]) -> Any:
    """The contract's table (docs/contract.md) for one slice without NaN."""
    if kind == "softmin":
        v = [-a for a in v]
    if kind == "logsumexp":
        if INF in v:
            return INF
        finite = [a for a in v if a != -INF]
        if not finite:
            return -INF
        m = max(finite)
        return m + math.log(sum(math.exp(a - m) for a in finite))
    k = v.count(INF)
    if k:
        p = [1.0 / k if a == INF else 0.0 for a in v]
    elif all(a == -INF for a in v):
        p = [0.0] * len(v)
    else:
        fin = [a for a in v if a != -INF]
        q = iter(_softmax64(fin))
        p = [0.0 if a == -INF else next(q) for a in v]
    if kind == "log_softmax":
        return [math.log(a) if a > 0 else -INF for a in p]
    return p


@pytest.mark.parametrize(("data", "src", "dst", "rounded"), NARROWING)
@pytest.mark.parametrize("kind", KINDS)
def test_dtype_narrowing_casts_first(
    path: str, kind: str, data: list[float], src: str, dst: str, rounded: list[float]
) -> None:
    """``[1e308, 0]`` float64 with ``dtype=float32`` is ``[1, 0]``, not NaN (issue 10)."""
    import torch

    x = _t(data, src)
    want = np.asarray(_contract_row(kind, rounded), dtype=np.float64)
    dt = getattr(torch, dst)
    tol = {"rtol": 2 * EPS[dst], "atol": 0.0}
    for kw in ({}, {"temperature": 1.0}) if kind != "logsumexp" else ({},):
        out = _call(kind, x, -1, dtype=dt, **kw)
        assert out.dtype == dt
        assert_same_special_positions(_np(out), want)
        np.testing.assert_allclose(_np(out), want, **tol)
    if kind == "logsumexp":
        lse, sign = sx.logsumexp(x, dtype=dt, return_sign=True)
        assert_same_special_positions(_np(lse), want)
        np.testing.assert_allclose(_np(lse), want, **tol)
        # something was left, unless everything was -inf before the cast too
        assert float(sign) == (0.0 if all(a == -INF for a in data) else 1.0)
    # a masked huge value is absent: the rest is the distribution
    if kind != "logsumexp" and len(data) > 2:
        keep = [True] * (len(data) - 1) + [False]
        out = _call(kind, x, -1, dtype=dt, where=_t(keep))
        head = np.asarray(_contract_row(kind, rounded[:-1]), dtype=np.float64)
        tail = -INF if kind == "log_softmax" else 0.0
        want_masked = np.append(head, tail)
        assert_same_special_positions(_np(out), want_masked)
        np.testing.assert_allclose(_np(out), want_masked, **tol)


def test_logsumexp_sign_under_narrowing_stays_one() -> None:
    """-70000 rounds to -inf in float16, but something was left: sign 1.

    docs/decisions.md, "``return_sign`` under a narrowing ``dtype=``".
    """
    import torch

    lse, sign = sx.logsumexp(
        _t([-70000.0], "float32"), dtype=torch.float16, return_sign=True
    )
    assert lse.dtype == sign.dtype == torch.float16
    assert float(lse) == -INF
    assert float(sign) == 1.0
    lse, sign = sx.logsumexp(
        _t([[-70000.0, -INF], [-INF, -INF]], "float64"),
        axis=-1,
        dtype=torch.float16,
        return_sign=True,
    )
    assert _py(lse) == [-INF, -INF]
    assert _py(sign) == [1.0, 0.0]


def _masked_grad_rows() -> tuple[np.ndarray, np.ndarray]:
    """Rows for mask gradients: ordinary, peaked, a masked NaN, an unmasked -inf, masked max."""
    rng = np.random.default_rng(12)
    x = rng.normal(0.0, 2.0, size=(6, 5))
    x[1, 2] = 40.0  # peaked: log_softmax's log1p recomputation
    x[2, 1] = NAN  # masked below
    x[3, 4] = -INF  # unmasked: its cotangent counts (jax.nn)
    x[4, 0] = 50.0  # the row's maximum, masked
    keep = rng.random(x.shape) < 0.7
    keep[:, 3] = True  # something left in every row but the last
    keep[2, 1] = keep[4, 0] = False
    keep[3, 4] = True
    keep[5] = False  # nothing left: zero gradient
    return x, keep


def _reference_grads(
    kind: str, x: np.ndarray, keep: np.ndarray, g: np.ndarray, t: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each row's gradient with its masked entries deleted (torch's own functions)."""
    import torch

    gx = np.zeros_like(x)
    gt = None if t is None else np.zeros_like(t)
    for i in range(x.shape[0]):
        cols = np.flatnonzero(keep[i])
        if cols.size == 0:
            continue
        xi = torch.tensor(x[i, cols], requires_grad=True)
        ti = torch.tensor(
            1.0 if t is None else float(t[i, 0]),
            dtype=torch.float64,
            requires_grad=True,
        )
        xs = -xi if kind == "softmin" else xi
        if bool((xs == INF).any()):
            continue  # a +inf slice: constant outputs, zero gradient
        # only finite entries are divided, as the generic core: a -inf entry
        # passes its cotangent through unscaled and gives t no gradient
        finite = torch.isfinite(xs)
        z = torch.where(finite, torch.where(finite, xs, 0.0) / ti, xs)
        y = torch.log_softmax(z, 0) if kind == "log_softmax" else torch.softmax(z, 0)
        y.backward(torch.tensor(g[i, cols]))
        assert xi.grad is not None
        assert ti.grad is not None
        gx[i, cols] = xi.grad.numpy()
        if gt is not None:
            gt[i, 0] = float(ti.grad)
    return gx, gt


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("temp", [None, "python", "tensor"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin"])
def test_masked_entries_get_no_gradient(
    path: str, kind: str, temp: str | None, axis: int
) -> None:
    """The gradient is that of the unmasked entries alone, 0 at masked ones (issue 10).

    The cotangent is nonzero everywhere, masked entries included: their
    outputs are constants, so what they receive must not reach the row sums
    of the backward (log_softmax gave ``[-0.27, 0, -0.73]`` for ``[1, 5, 2]``
    masked in the middle with cotangent ``[0, 1, 0]``).
    """
    import torch

    x_np, keep = _masked_grad_rows()
    g_np = np.random.default_rng(13).uniform(-1.0, 2.0, size=x_np.shape)
    t_np = np.linspace(0.5, 2.0, x_np.shape[0])[:, None]
    t_ref = (
        None
        if temp is None
        else (np.full_like(t_np, 0.7) if temp == "python" else t_np)
    )
    want_x, want_t = _reference_grads(kind, x_np, keep, g_np, t_ref)

    def tr(a: np.ndarray) -> np.ndarray:
        return a if axis == -1 else np.ascontiguousarray(a.T)

    x = _t(tr(x_np)).requires_grad_(True)
    kw: dict[str, Any] = {"where": _t(tr(keep))}
    inputs = [x]
    if temp == "python":
        kw["temperature"] = 0.7
    elif temp == "tensor":
        t = _t(tr(t_np)).requires_grad_(True)
        kw["temperature"] = t
        inputs.append(t)
    y = _call(kind, x, axis, **kw)
    grads = torch.autograd.grad(y, inputs, grad_outputs=_t(tr(g_np)))
    gx = tr(grads[0].numpy())
    assert np.all(gx[~keep] == 0), gx
    np.testing.assert_allclose(gx, want_x, rtol=1e-12, atol=1e-14)
    if want_t is not None and temp == "tensor":
        np.testing.assert_allclose(tr(grads[1].numpy()), want_t, rtol=1e-12, atol=1e-14)


def test_masked_gradient_issue_example(path: str) -> None:
    import torch

    x = torch.tensor([1.0, 5.0, 2.0], requires_grad=True)
    sx.log_softmax(x, where=torch.tensor([True, False, True])).backward(
        torch.tensor([0.0, 1.0, 0.0])
    )
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "softmin"])
def test_temperature_overflow_keeps_gradients_finite(
    path: str, kind: str, dtype: str
) -> None:
    """``x / t`` overflowing to +-inf is an inf entry, whose output is constant.

    ``softmax([3e38, 1], temperature=tensor(0.25))`` in float32 is ``[1, 0]``
    (a +inf slice); the temperature's gradient was NaN, ``0 * (x / t) / t``.
    A slice where the overflow gives ``-inf`` keeps the gradient of the rest,
    computed here with torch's own functions on the finite entries.
    """
    import torch

    big = float(np.finfo(dtype).max) * 0.9
    sign = -1.0 if kind == "softmin" else 1.0
    x = _t([[sign * big, 1.0, 2.0], [-sign * big, 1.0, 2.0]], dtype)
    x.requires_grad_(True)
    t = _t([[0.25], [0.5]], dtype).requires_grad_(True)
    y = _call(kind, x, -1, temperature=t)
    g = _t([[0.3, -1.0, 2.0], [0.7, 1.5, -0.5]], dtype)
    gx, gt = torch.autograd.grad(y, [x, t], grad_outputs=g)
    assert torch.isfinite(gx).all()
    assert torch.isfinite(gt).all()
    # row 0: a +inf entry after the division: constant outputs
    assert _py(y[0]) == (
        [1.0, 0.0, 0.0] if kind != "log_softmax" else [0.0, -INF, -INF]
    )
    assert _py(gx[0]) == [0.0, 0.0, 0.0]
    assert float(gt[0, 0]) == 0.0
    # row 1: a -inf entry (a constant input) and the other two
    xr = _t([1.0, 2.0], "float64").requires_grad_(True)
    tr = _t(0.5, "float64").requires_grad_(True)
    # the -inf entry's cotangent still counts in log_softmax's sum (jax.nn)
    z = torch.cat([_t([-INF], "float64"), sign * xr / tr])
    yr = torch.log_softmax(z, 0) if kind == "log_softmax" else torch.softmax(z, 0)
    gxr, gtr = torch.autograd.grad(yr, [xr, tr], grad_outputs=g[1].double())
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(_py(gx[1]), [0.0, *_py(gxr)], rtol=tol, atol=tol)
    np.testing.assert_allclose(float(gt[1, 0]), float(gtr), rtol=tol, atol=tol)


EMPTY = [((0, 10), 0), ((0, 10), -1), ((3, 0), -1), ((3, 0), 0), ((2, 0, 3), (1, 2))]


@pytest.mark.parametrize(("shape", "axis"), EMPTY)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_input_keeps_autograd(
    kind: str, shape: tuple[int, ...], axis: Any
) -> None:
    """``requires_grad`` as torch's own function gives it; autograd.grad gives zeros."""
    import torch

    peers = {
        "softmax": torch.softmax,
        "log_softmax": torch.log_softmax,
        "softmin": lambda a, d: torch.softmax(-a, d),
        "logsumexp": torch.logsumexp,
    }
    dims = axis if isinstance(axis, tuple) else (axis,)
    for dtype in ("float32", "float64", "float16"):
        x = _t(np.zeros(shape), dtype).requires_grad_(True)
        y = _call(kind, x, axis)
        if kind == "logsumexp" or len(dims) == 1:
            peer = peers[kind](x, dims if kind == "logsumexp" else dims[0])
            assert y.requires_grad == peer.requires_grad
        assert y.requires_grad
        assert y.dtype == x.dtype
        (g,) = torch.autograd.grad(y.sum(), x, allow_unused=False)
        assert g.shape == x.shape
        assert g.dtype == x.dtype
        with torch.no_grad():
            assert not _call(kind, x, axis).requires_grad
        assert not _call(kind, x.detach(), axis).requires_grad
    x = _t(np.zeros(shape)).requires_grad_(True)
    if kind == "logsumexp":
        lse, _ = sx.logsumexp(x, axis=axis, keepdims=True, return_sign=True)
        assert lse.requires_grad
        (g,) = torch.autograd.grad(lse.sum(), x)
        assert g.shape == x.shape
        b = _t(np.ones(shape)).requires_grad_(True)
        lse = sx.logsumexp(x.detach(), axis=axis, b=b)
        assert lse.requires_grad
        assert torch.autograd.grad(lse.sum(), b)[0].shape == b.shape
    else:
        # a temperature that requires grad ties in too, even holding inf or NaN
        t_shape = tuple(1 if n == 0 else n for n in shape)
        t = _t(np.full(t_shape, INF)).requires_grad_(True)
        y = _call(kind, x, axis, temperature=t)
        assert y.requires_grad
        gx, gt = torch.autograd.grad(y.sum(), [x, t])
        assert gx.shape == x.shape
        assert gt.shape == t.shape
        assert bool((gt == 0).all())


# ---------------------------------------------------------------------------
# hypothesis: the fast path against the generic core on small awkward tensors

# float64 values, rounded to the tensor's dtype (huge ones become +-inf there)
POOL = [
    0.0, -0.0, 1.0, -1.0, 2.5, -3.75, 40.0, -40.0,
    1e300, -1e300, 3e38, -3e38, 6e4, -6e4,  # huge in float64 / float32 / float16
    1e-30, -1e-30, 1e-310, 1e-40, 1e-7,  # tiny and subnormal (per dtype)
    INF, -INF, NAN,
]  # fmt: skip
INT_POOL = [0, 1, -1, 3, -7, 100, 70000, -70000]
HDTYPES = ("float32", "float64", "float16", "bfloat16", "int32")


@st.composite
def _hcases(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(HDTYPES))
    n = math.prod(shape)
    if dtype == "int32":
        ints = draw(st.lists(st.sampled_from(INT_POOL), min_size=n, max_size=n))
        data = np.asarray(ints, dtype=np.float64)
    else:
        vals = draw(st.lists(st.sampled_from(POOL), min_size=n, max_size=n))
        data = np.asarray(vals, dtype=np.float64)
    data = data.reshape(shape)
    if ndim and n and draw(st.booleans()):  # an all -inf slice along the last axis
        data[(0,) * (ndim - 1)] = -INF if dtype != "int32" else 0
    axis_choices: list[Any] = [None, ()]
    if ndim:
        axis_choices += [*range(-ndim, ndim)]
        axis_choices += [
            tuple(a for a in range(ndim) if (bits >> a) & 1)
            for bits in range(1, 2**ndim)
        ]
    axis = draw(st.sampled_from(axis_choices))
    if kind == "logsumexp" and axis == -1 and draw(st.booleans()):
        axis = None

    def bshape() -> tuple[int, ...]:
        """A shape that broadcasts to ``shape`` without enlarging it."""
        drop = draw(st.integers(0, ndim))
        return tuple(s if draw(st.booleans()) else 1 for s in shape[drop:])

    case: dict[str, Any] = {
        "kind": kind,
        "data": data,
        "dtype": dtype,
        "axis": axis,
        "layout": draw(st.sampled_from(["contiguous", "transposed", "strided"])),
        "branch_free": draw(st.booleans()),
        "out": draw(
            st.sampled_from([None, None, "float32", "float64", "float16", "bfloat16"])
        ),
        "kw": {},
    }
    if draw(st.booleans()):
        ws = bshape()
        case["where"] = np.asarray(
            draw(
                st.lists(st.booleans(), min_size=math.prod(ws), max_size=math.prod(ws))
            ),
            dtype=bool,
        ).reshape(ws)
    if kind == "logsumexp":
        case["kw"]["keepdims"] = draw(st.booleans())
        case["kw"]["return_sign"] = draw(st.booleans())
        if draw(st.booleans()):
            bs = bshape()
            vals = st.sampled_from([0.0, 1.0, 2.0, 0.5, -1.0])
            case["b"] = np.asarray(
                draw(st.lists(vals, min_size=math.prod(bs), max_size=math.prod(bs))),
                dtype=np.float64,
            ).reshape(bs)
    else:
        t = draw(st.sampled_from([None, "python", "tensor"]))
        if t == "python":
            case["kw"]["temperature"] = draw(st.sampled_from([0.3, 1.0, 2.5]))
        elif t == "tensor":
            ts = bshape()
            vals = st.sampled_from([0.25, 0.5, 1.0, 3.0])
            case["temperature"] = np.asarray(
                draw(st.lists(vals, min_size=math.prod(ts), max_size=math.prod(ts))),
                dtype=np.float64,
            ).reshape(ts)
    return case


def _laid_out(data: np.ndarray, dtype: str, layout: str) -> Any:
    """``data`` as a tensor of ``dtype``, contiguous or as a transposed / strided view."""
    import torch

    t = _t(data.astype(np.int32) if dtype == "int32" else data, dtype)
    if layout == "transposed" and t.ndim >= 2:
        t = t.mT.contiguous().mT  # same values, column-major strides
    elif layout == "strided" and t.ndim >= 1:
        t = torch.repeat_interleave(t, 2, dim=-1)[..., ::2]
    return t


def _hcall(case: dict[str, Any], x: Any, extra: dict[str, Any]) -> Any:
    import torch

    kw = {**case["kw"], **extra}
    if case["out"] is not None:
        kw["dtype"] = getattr(torch, case["out"])
    return _call(case["kind"], x, case["axis"], **kw)


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return out if isinstance(out, tuple) else (out,)


def _nan_slices(case: dict[str, Any]) -> np.ndarray:
    """Where ``x``'s slice holds a NaN that takes part (not masked, ``b != 0``)."""
    data = case["data"]
    live = np.isnan(data)
    if "where" in case:
        live &= np.broadcast_to(case["where"], data.shape)
    if "b" in case:
        live &= np.broadcast_to(case["b"], data.shape) != 0
    axis = case["axis"]
    if axis == ():
        return live
    return np.broadcast_to(live.any(axis=axis, keepdims=True), data.shape)


def _overflows(case: dict[str, Any], x: Any) -> bool:
    """Whether a tensor temperature sends a finite entry of ``x`` to +-inf."""
    if "temperature" not in case:
        return False
    xd = _np(x)
    with np.errstate(over="ignore"):
        q = np.abs(xd) / np.broadcast_to(case["temperature"], xd.shape)
    big = np.isfinite(xd) & (q > float(np.finfo(case["dtype"]).max))
    return bool(big.any())


def _declined(case: dict[str, Any], x: Any, extra: dict[str, Any]) -> bool:
    """Whether the fast path leaves this call to the generic core."""
    import torch

    from softmax_xp._fast import torch as fast_torch
    from softmax_xp._validation import prepare, prepare_logsumexp

    kind, kw = case["kind"], case["kw"]
    dt = None if case["out"] is None else getattr(torch, case["out"])
    if kind == "logsumexp":
        call = prepare_logsumexp(
            x, case["axis"], extra.get("b"), extra.get("where"), dt, None
        )
        opts = {"keepdims": kw["keepdims"], "return_sign": kw["return_sign"]}
        return fast_torch.run(kind, call, **opts) is NotImplemented
    t = extra.get("temperature", kw.get("temperature"))
    call = prepare(kind, x, case["axis"], extra.get("where"), t, dt, None)
    if kind == "softmin":
        return fast_torch.run("softmax", call, negate=True) is NotImplemented
    return fast_torch.run(kind, call) is NotImplemented


@settings(max_examples=200, deadline=None)
@given(case=_hcases())
def test_hypothesis_fast_matches_generic(case: dict[str, Any]) -> None:
    """Values, special positions and gradients of both paths agree (issue 10, part 5).

    ``dtype=`` casts first (docs/decisions.md, "what a narrowing ``dtype=``
    rounds"): the generic side gets ``x`` already cast.
    """
    import torch

    from softmax_xp._fast import torch as fast_torch

    kind, dtype = case["kind"], case["dtype"]
    x = _laid_out(case["data"], dtype, case["layout"])
    extra: dict[str, Any] = {}
    if "where" in case:
        extra["where"] = _t(case["where"])
    if "b" in case:
        extra["b"] = _t(case["b"])
    if "temperature" in case:
        extra["temperature"] = _t(case["temperature"])
    out_dtype = case["out"] or ("float32" if dtype == "int32" else dtype)
    if (
        "b" in case
        and case["out"] is None
        and dtype in ("float32", "float16", "bfloat16", "int32")
    ):
        out_dtype = "float64"  # promoted with b's float64
    x_generic = x
    if case["out"] is not None and not _declined(case, x, extra):
        # the generic core computes a narrowing dtype= in the compute dtype
        # rather than casting first (reported); return_sign keeps the sign of
        # the exact total (docs/decisions.md)
        x_generic = x.to(getattr(torch, case["out"]))
    before = x.clone()
    with fast_torch.branch_free(case["branch_free"]):
        fast = _as_tuple(_hcall(case, x, extra))
    with sx.force_generic():
        gen = _as_tuple(_hcall(case, x_generic, extra))
    assert torch.equal(x.isnan(), before.isnan())
    assert torch.equal(x.nan_to_num(), before.nan_to_num())
    for f, g in zip(fast, gen, strict=True):
        assert f.shape == g.shape
        assert str(f.dtype).removeprefix("torch.") == out_dtype
        _compare(kind, f, g, out_dtype, x_generic)

    # gradients: the same on both paths, and finite, except in slices with a
    # NaN (no promise there: a NaN went in)
    if dtype not in ("float32", "float64") or case["out"] not in (None, dtype):
        return
    if x.numel() == 0:
        return
    # cancellation in the backward (g - p * sum(g)) costs eps * |sum(g)|,
    # times the derivative of x / t: 1 / t for x, |x| / t**2 for t
    t_min = float(np.min(case.get("temperature", case["kw"].get("temperature", 1.0))))
    x_fin = np.abs(_np(x)[np.isfinite(_np(x))])
    x_max = float(np.max(x_fin, initial=1.0))
    eps = 32 * EPS[dtype] * max(1, x.numel())
    rtol = 1e-9 if dtype == "float64" else 1e-4
    atols = [eps / min(t_min, 1.0), eps * x_max / t_min**2]
    nan_slice = _nan_slices(case)
    inputs = [x.detach().clone().requires_grad_(True)]
    t = extra.get("temperature")
    if t is not None:
        inputs.append(t.detach().clone().requires_grad_(True))

    def grads(force: bool, branch_free: bool) -> list[np.ndarray]:
        xs = [a.detach().clone().requires_grad_(True) for a in inputs]
        kw = {**extra}
        if t is not None:
            kw["temperature"] = xs[1]
        with fast_torch.branch_free(branch_free), sx.force_generic(force):
            y = _as_tuple(_hcall(case, xs[0], kw))[0]
        if not y.requires_grad:
            return [np.zeros(a.shape) for a in xs]
        # a cotangent on every output, the constant (masked, special) ones too;
        # not on unmasked -inf outputs, whose gradient the generic core loses
        # when the slice's max is > 1 (reported: _subtract_max)
        w = torch.linspace(-0.5, 1.5, y.numel(), dtype=y.dtype).reshape(y.shape)
        if case["kind"] == "log_softmax":
            lost = y.detach() == -INF
            if "where" in case:
                lost &= _t(case["where"])
            w = torch.where(lost, 0.0, w)
        gs = torch.autograd.grad(y, xs, grad_outputs=w, allow_unused=True)
        return [
            np.zeros(a.shape) if gr is None else gr.numpy()
            for a, gr in zip(xs, gs, strict=True)
        ]

    # x / t overflowing to +-inf: the generic core's gradient is NaN (reported);
    # the fast path's formulations are then compared with each other
    if _overflows(case, x):
        if _declined(case, x, extra):
            return  # the generic core's NaN (reported)
        want = grads(False, False)
    else:
        want = grads(True, False)
    for bf in (False, True):
        got = grads(False, bf)
        if nan_slice.any():  # the temperature's gradient sums over them
            got = [np.where(nan_slice, 0.0, got[0])]
            want = [np.where(nan_slice, 0.0, want[0])]
        for a, b, atol in zip(got, want, atols, strict=False):
            assert np.isfinite(a).all(), (bf, a)
            np.testing.assert_allclose(
                a, b, rtol=rtol, atol=atol, err_msg=f"branch_free={bf}"
            )


# ---------------------------------------------------------------------------
# the small-call path (float32 / float64 CPU tensors, last axis, no options)


def _small_paths_taken(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record, per kind, what the small-call path returned (``None``: it declined)."""
    from softmax_xp._fast import torch as fast_torch

    taken: dict[str, list[Any]] = {}
    for kind, fn in list(fast_torch._SMALL_PATHS.items()):

        def spy(x: Any, shape: Any, opts: Any, fn: Any = fn, kind: str = kind) -> Any:
            out = fn(x, shape, opts)
            taken.setdefault(kind, []).append(out)
            return out

        monkeypatch.setitem(fast_torch._SMALL_PATHS, kind, spy)
    return taken


def _log1p_reference(data: np.ndarray, kind: str) -> np.ndarray:
    """The exact result for the rounded shift ``fl(x - max)``, in long double, rows of finite data."""
    ld = _extended()
    z = (data - data.max(axis=-1, keepdims=True)).astype(ld)
    e = np.exp(z)
    k = np.sum(z == 0, axis=-1, keepdims=True)
    s = np.where(z < 0, e, 0).sum(axis=-1, keepdims=True) + (k - 1)
    if kind == "softmax":
        return e / (1 + s)
    if kind == "log_softmax":
        return z - np.log1p(s)
    m = data.max(axis=-1).astype(ld)
    return m + np.log1p(s[..., 0])


def _ulp_error(got: np.ndarray, exact: np.ndarray, dtype: str) -> float:
    nonzero = np.abs(exact) >= TINY[dtype]
    rel = np.abs(got.astype(exact.dtype) - exact)[nonzero] / np.abs(exact[nonzero])
    return float(rel.max(initial=0.0)) / EPS[dtype]


def _small_batch(rng: np.random.Generator, rows: int, n: int, how: str) -> np.ndarray:
    """Finite rows that reach each branch of the small path.

    ``"plain"``: normal rows; ``"peaked"``: one entry far above the rest in
    every other row (log1p form), ties among the maxima in some;
    ``"drift"``: near-uniform rows, whose fused sums drift most.
    """
    data = rng.normal(0.0, 3.0, size=(rows, n))
    if how == "peaked":
        top = rng.integers(0, n, rows)
        data[np.arange(rows), top] += rng.uniform(0.0, 40.0, rows)
        data[::2] = rng.normal(0.0, 1.0, size=data[::2].shape)
        if n > 1:
            data[1::4, 0] = data[1::4].max(axis=1) + 1.0
            data[1::4, -1] = data[1::4, 0]  # tied maxima
    elif how == "drift":
        data = rng.uniform(-1e-3, 0.0, size=(rows, n))
    elif how == "tiny" and n > 1:  # s' of a few float32 / float64 eps
        data = rng.normal(0.0, 0.1, size=(rows, n))
        eps = rng.choice([2.0**-23, 2.0**-52], rows)
        gap = np.log((n - 1) / (eps * rng.uniform(0.1, 10.0, rows)))
        data[np.arange(rows), rng.integers(0, n, rows)] += gap
    return data


SMALL_KINDS = ("softmax", "log_softmax", "logsumexp")


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "autograd"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("how", ["plain", "peaked", "drift", "tiny"])
@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_small_path_accuracy_against_extended_reference(
    monkeypatch: pytest.MonkeyPatch, kind: str, how: str, dtype: str, grad: bool
) -> None:
    """4 ulp relative (logsumexp 2) of the exact result, rows of 1 to 4096 entries.

    Under autograd the values come from other formulations (log_softmax: the
    fused output corrected per row): they keep the bound too.
    """
    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(21)
    bound = 2.0 if kind == "logsumexp" else 4.0
    for n in (1, 2, 3, 7, 10, 15, 16, 33, 100, 128, 257, 1000, 4096):
        rows = max(1, min(200, 32768 // n))
        data = _small_batch(rng, rows, n, how).astype(dtype)
        got = _np(_call(kind, _t(data).requires_grad_(grad), -1))
        worst = _ulp_error(got, _log1p_reference(data, kind), dtype)
        assert worst <= bound, f"n={n}: {worst:.2f} ulp"
    assert all(out is not None for out in taken[kind])  # no row was special


SMALL_SPECIAL_ROWS = [
    [NAN, 1.0, 2.0],
    [INF, 1.0, INF],
    [-INF, -INF, -INF],
    [INF, INF, INF],
    [-INF, 0.5, 2.0],
    [1.0, 1.0, 1.0],
    [0.0, -40.0, -INF],
    [45.0, 0.0, 1.0],
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", [*SMALL_KINDS, "softmin"])
@pytest.mark.parametrize("special", range(len(SMALL_SPECIAL_ROWS)))
def test_small_path_one_special_row_in_a_batch(
    monkeypatch: pytest.MonkeyPatch, kind: str, special: int, dtype: str
) -> None:
    """One special row among ordinary ones: the contract's values there, the rest exact.

    The small path declines (``None``) exactly when a row holds NaN, ``+inf``
    or nothing finite; the eager path then fixes those rows.
    """
    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(special)
    data = rng.normal(0.0, 2.0, size=(6, 3))
    data[special % 6] = SMALL_SPECIAL_ROWS[special]
    x = _t(data, dtype)
    fast = _check(kind, x, -1, dtype)
    row = np.asarray(SMALL_SPECIAL_ROWS[special])
    declined = bool(np.isnan(row).any() or not np.isfinite(row.max()))
    if kind == "softmin":
        assert "softmax" not in taken  # softmin takes the eager path
    else:
        assert [out is None for out in taken[kind]] == [declined]
    ok = [i for i in range(6) if i != special % 6]
    sub = data[ok].astype(dtype)
    if kind != "softmin":
        worst = _ulp_error(_np(fast)[ok], _log1p_reference(sub, kind), dtype)
        assert worst <= 4.0


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_small_path_threshold_both_sides(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Up to ``_SMALL`` elements the small path runs, beyond it the eager one; both agree."""
    from softmax_xp._fast import torch as fast_torch

    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(22)
    n = 64
    for rows, small in (
        (fast_torch._SMALL // n, True),
        (fast_torch._SMALL // n + 1, False),
    ):
        taken.clear()
        data = _small_batch(rng, rows, n, "peaked")
        data[3] = [INF] + [0.0] * (n - 1)  # and one special row
        x = _t(data.astype(np.float32))
        _check(kind, x, -1, "float32")
        assert (kind in taken) == small
        exact = _log1p_reference(np.delete(data.astype(np.float32), 3, axis=0), kind)
        got = np.delete(_np(_call(kind, x, -1)), 3, axis=0)
        assert _ulp_error(got, exact, "float32") <= 4.0


def test_small_path_declines_what_it_does_not_cover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Masks, temperatures, weights, signs, half precision, other axes, dtype=: not the small path."""
    import torch

    from softmax_xp._fast import torch as fast_torch

    taken = _small_paths_taken(monkeypatch)
    x = _t(np.random.default_rng(23).normal(size=(4, 6)))
    w = _t(np.arange(24).reshape(4, 6) % 5 != 0)
    calls = [
        lambda: sx.softmax(x, where=w),
        lambda: sx.log_softmax(x, temperature=2.0),
        lambda: sx.softmax(x, axis=0),
        lambda: sx.softmax(x, axis=(0, 1)),
        lambda: sx.log_softmax(x.to(torch.float16)),
        lambda: sx.softmax(x.to(torch.bfloat16)),
        lambda: sx.softmax(x, dtype=torch.float32),
        lambda: sx.softmin(x),
        lambda: sx.logsumexp(x, axis=-1, b=x.abs()),
        lambda: sx.logsumexp(x, axis=-1, return_sign=True),
        lambda: sx.logsumexp(x),  # every axis
        lambda: sx.softmax(_t(np.arange(24).reshape(4, 6))),  # integers
        lambda: sx.softmax(x[:, :0]),
    ]
    for f in calls:
        f()
    with fast_torch.branch_free():
        sx.softmax(x)
    assert taken == {}
    sx.softmax(x)
    assert "softmax" in taken


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", SMALL_KINDS)
@pytest.mark.parametrize("shape", [(7,), (1, 1), (3, 1), (5, 10), (2, 3, 16), (300, 4)])
def test_small_path_shapes_match_generic(
    monkeypatch: pytest.MonkeyPatch, kind: str, shape: tuple[int, ...], dtype: str
) -> None:
    """1-D to 3-D, size-1 axes, more rows than the list check reads, non-contiguous input."""
    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(24)
    for how in ("plain", "peaked", "drift", "tiny"):
        data = _small_batch(rng, math.prod(shape[:-1]), shape[-1], how).reshape(shape)
        for x in (_t(data, dtype), _t(np.repeat(data, 2, axis=-1), dtype)[..., ::2]):
            for keepdims in (False, True):
                kw = {"keepdims": keepdims} if kind == "logsumexp" else {}
                fast = _check(kind, x, -1, dtype, **kw)
                assert fast.shape == _call(kind, x, -1, **kw).shape
    assert taken[kind]
    assert all(out is not None for out in taken[kind])


@pytest.mark.parametrize("how", ["plain", "peaked", "drift", "tiny"])
@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_small_path_gradients(
    monkeypatch: pytest.MonkeyPatch, kind: str, how: str
) -> None:
    """gradcheck and gradgradcheck (torch's own backward nodes), and the generic core's gradient."""
    import torch

    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(25)
    data = _small_batch(rng, 6, 5, how)
    if how == "peaked":
        data[1] = [3.0, 1.0, 3.0, -2.0, 0.5]  # tied maxima
    x = _t(data).requires_grad_(True)

    def f(a: Any) -> Any:
        return _call(kind, a, -1)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-8, rtol=1e-6)
    assert torch.autograd.gradgradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)
    w = _t(rng.normal(size=data.shape if kind != "logsumexp" else data.shape[:1]))
    (g,) = torch.autograd.grad(f(x), x, grad_outputs=w)
    with sx.force_generic():
        (want,) = torch.autograd.grad(f(x), x, grad_outputs=w)
    np.testing.assert_allclose(g.numpy(), want.numpy(), rtol=1e-12, atol=1e-13)
    assert taken[kind]
    assert all(out is not None for out in taken[kind])


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_small_path_gradients_with_special_rows(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A special row under autograd: the small path declines, gradients finite, 0 there."""
    import torch

    taken = _small_paths_taken(monkeypatch)
    rng = np.random.default_rng(26)
    specials = ([INF, 0.0, 1.0, INF, 2.0], [INF, 0.0, 1.0, 3.0, 2.0], [-INF] * 5)
    for row in specials:
        for n in (5, 1):
            taken.clear()
            data = rng.normal(size=(4, n))
            data[1] = row[:n]
            x = _t(data).requires_grad_(True)
            y = _call(kind, x, -1)
            (g,) = torch.autograd.grad(_finite_sum(y), x)
            assert torch.isfinite(g).all(), (row[:n], g)
            assert (g[1] == 0).all()
            assert taken[kind] == [None]


@pytest.mark.parametrize("kind", SMALL_KINDS)
def test_small_path_leaves_input_alone(kind: str) -> None:
    """The in-place steps of the small path touch its own buffers only."""
    import torch

    rng = np.random.default_rng(27)
    for how in ("plain", "peaked", "drift"):
        x = _t(_small_batch(rng, 8, 12, how))
        before = x.clone()
        y = _call(kind, x, -1)
        assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        y.add_(1)
        assert torch.equal(x, before)
