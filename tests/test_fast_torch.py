"""The PyTorch fast path (``softmax_xp._fast.torch``) against the generic core.

Both formulations of the fast path run here on CPU tensors: the eager one
(fused kernel, one read of its output, data-dependent fix-ups) and the
branch-free one that CUDA tensors and ``torch.compile`` take, switched on with
the module's ``FORCE_BRANCH_FREE`` flag. Every case is compared with the
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
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which formulation of the fast path runs (the device one, on CPU tensors)."""
    from softmax_xp._fast import torch as fast_torch

    monkeypatch.setattr(fast_torch, "FORCE_BRANCH_FREE", request.param == "branch-free")
    return str(request.param)


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

    w = _t(keep[GRAD_ROWS])
    for kind in ("softmax", "log_softmax", "softmin"):
        fn = getattr(sx, kind)
        yield f"{kind}-where", lambda a, fn=fn: sel(fn(a, where=w))
        yield f"{kind}-axis0", lambda a, fn=fn: sel(fn(a.T, axis=0))
        yield f"{kind}-axes", lambda a, fn=fn: sel(fn(a[finite_rows[:2]], axis=None))
    yield "logsumexp-where", lambda a: sel(sx.logsumexp(a, axis=-1, where=w))
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
        return p.sum(-1) + q[:, 0] + r + sx.softmin(x, axis=None).sum(-1)

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
