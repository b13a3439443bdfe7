"""Everything follows ``x``: namespace, dtype, device and shape of the results.

Also: ``xp=`` spellings, list / scalar conversion, NumPy 0-d results, no
aliasing of the input, and unusual NumPy memory layouts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
from conftest import Backend, needs

import softmax_xp as sx


def _scipy_special() -> Any:
    """scipy.special, or a skip where SciPy is not installed (tests-minimal)."""
    return pytest.importorskip("scipy.special")


F64_EPS = float(np.finfo(np.float64).eps)

# (id, call, numpy reduction options giving the expected shape or None)
Case = tuple[str, Callable[..., Any], dict[str, Any] | None]

CASES: list[Case] = [
    ("softmax", sx.softmax, None),
    ("softmax-axis0", lambda x, **kw: sx.softmax(x, axis=0, **kw), None),
    ("softmax-axisNone", lambda x, **kw: sx.softmax(x, axis=None, **kw), None),
    ("softmax-axis01", lambda x, **kw: sx.softmax(x, axis=(0, 1), **kw), None),
    ("softmax-axis()", lambda x, **kw: sx.softmax(x, axis=(), **kw), None),
    ("log_softmax", sx.log_softmax, None),
    ("log_softmax-axis0", lambda x, **kw: sx.log_softmax(x, axis=0, **kw), None),
    ("softmin", sx.softmin, None),
    ("softmin-axis(-2)", lambda x, **kw: sx.softmin(x, axis=(-2,), **kw), None),
    ("logsumexp", sx.logsumexp, {"axis": None}),
    (
        "logsumexp-axis-1",
        lambda x, **kw: sx.logsumexp(x, axis=-1, **kw),
        {"axis": -1},
    ),
    (
        "logsumexp-axis0-keepdims",
        lambda x, **kw: sx.logsumexp(x, axis=0, keepdims=True, **kw),
        {"axis": 0, "keepdims": True},
    ),
    (
        "logsumexp-axisNone-keepdims",
        lambda x, **kw: sx.logsumexp(x, axis=None, keepdims=True, **kw),
        {"axis": None, "keepdims": True},
    ),
    (
        "logsumexp-axis()",
        lambda x, **kw: sx.logsumexp(x, axis=(), **kw),
        {"axis": ()},
    ),
    (
        "logsumexp-axis(1,0)",
        lambda x, **kw: sx.logsumexp(x, axis=(1, 0), **kw),
        {"axis": (1, 0)},
    ),
]
CASE_IDS = [c[0] for c in CASES]

X_VALUES = [[0.5, -1.0, 2.0, 3.0], [1.0, 1.0, -2.5, 0.0], [-3.0, 4.0, 0.25, 1.5]]


def _expected_shape(
    shape: tuple[int, ...], red: dict[str, Any] | None
) -> tuple[int, ...]:
    if red is None:
        return shape
    return np.sum(np.zeros(shape), **red).shape


def _as_tuple(out: Any) -> tuple[Any, ...]:
    return out if isinstance(out, tuple) else (out,)


def _assert_follows(
    be: Backend, out: Any, x: Any, dtype: Any, shape: tuple[int, ...]
) -> None:
    """``out`` is an array of ``x``'s namespace and device, with this dtype and shape."""
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(x)
    assert type(out) is type(x)
    assert array_api_compat.device(out) == array_api_compat.device(x)
    assert out.dtype == dtype
    assert tuple(out.shape) == shape
    if be.name == "numpy":
        assert isinstance(out, np.ndarray)


@pytest.mark.parametrize(("name", "call", "red"), CASES, ids=CASE_IDS)
def test_output_follows_input_for_every_float_dtype(
    be: Backend, name: str, call: Any, red: Any
) -> None:
    # every dtype for the plain calls, float32 for the others (the axis cases)
    names = list(be.float_dtypes)
    if name not in ("softmax", "log_softmax", "softmin", "logsumexp"):
        names = ["float32"]
    for dt_name in names:
        dt = be.float_dtypes[dt_name]
        x = be.asarray(X_VALUES, dtype=dt)
        out = call(x)
        _assert_follows(be, out, x, dt, _expected_shape((3, 4), red))
        # the values come out (and are numbers, whatever the backend)
        assert np.all(np.isfinite(be.to_numpy(out))), dt_name


@pytest.mark.parametrize(("name", "call", "red"), CASES, ids=CASE_IDS)
def test_integer_and_bool_input_give_the_default_float(
    be: Backend, name: str, call: Any, red: Any
) -> None:
    for dt_name in ("int32", "int64", "bool"):
        vals = (
            [[v > 0 for v in row] for row in X_VALUES]
            if dt_name == "bool"
            else [[int(v) for v in row] for row in X_VALUES]
        )
        x = be.asarray(vals, dtype=dt_name)
        out = call(x)
        _assert_follows(be, out, x, be.default_float, _expected_shape((3, 4), red))


@pytest.mark.parametrize(("name", "call", "red"), CASES, ids=CASE_IDS)
def test_dtype_argument_keeps_namespace_and_device(
    be: Backend, name: str, call: Any, red: Any
) -> None:
    x = be.asarray(X_VALUES, dtype="float64")
    out = call(x, dtype=be.dtype("float32"))
    _assert_follows(be, out, x, be.dtype("float32"), _expected_shape((3, 4), red))


def test_options_keep_namespace_device_and_shape(be: Backend) -> None:
    """where / temperature / b given as arrays of x's namespace (on its device) or lists."""
    x = be.asarray(X_VALUES, dtype="float32")
    f32 = be.dtype("float32")
    mask_list = [[True, False, True, True]] * 3
    mask = be.asarray(mask_list, dtype="bool")
    temp = be.asarray([[0.5], [2.0], [1.0]], dtype="float32")
    b = be.asarray([1.0, 2.0, 0.5, 3.0], dtype="float32")
    for fn in (sx.softmax, sx.log_softmax, sx.softmin):
        _assert_follows(be, fn(x, where=mask), x, f32, (3, 4))
        _assert_follows(be, fn(x, where=mask, temperature=temp), x, f32, (3, 4))
    for where in (mask, mask_list, [True, False, True, True]):
        _assert_follows(be, sx.softmax(x, where=where), x, f32, (3, 4))
        _assert_follows(be, sx.logsumexp(x, axis=-1, where=where), x, f32, (3,))
    for t in (temp, 2.5, [[0.5], [2.0], [1.0]]):
        _assert_follows(be, sx.softmax(x, temperature=t), x, f32, (3, 4))
    _assert_follows(be, sx.softmin(x, axis=0, temperature=temp), x, f32, (3, 4))
    # logsumexp promotes x with b as SciPy does: a list b is the namespace's
    # default float, a Python scalar is weak
    list_b_dtype = be.xp.result_type(f32, be.asarray([1.0]).dtype)
    for bb, want in ((b, f32), ([1.0, 2.0, 0.5, 3.0], list_b_dtype), (2.0, f32)):
        _assert_follows(be, sx.logsumexp(x, axis=-1, b=bb), x, want, (3,))
        _assert_follows(be, sx.logsumexp(x, b=bb, where=mask), x, want, ())


def test_return_sign_pair_follows_input(be: Backend) -> None:
    x = be.asarray(X_VALUES, dtype="float64")
    b = be.asarray([[1.0, -2.0, 0.5, 1.0]], dtype="float64")
    f64 = be.dtype("float64")
    for axis, shape in ((-1, (3,)), (None, ()), ((0, 1), ()), (0, (4,))):
        lse, sign = sx.logsumexp(x, axis=axis, b=b, return_sign=True)
        _assert_follows(be, lse, x, f64, shape)
        _assert_follows(be, sign, x, f64, shape)
        lse, sign = sx.logsumexp(x, axis=axis, return_sign=True)
        _assert_follows(be, lse, x, f64, shape)
        _assert_follows(be, sign, x, f64, shape)


def test_zero_dimensional_input(be: Backend) -> None:
    x = be.asarray(1.5, dtype="float64")
    f64 = be.dtype("float64")
    for axis in (None, ()):
        for fn in (sx.softmax, sx.log_softmax, sx.softmin, sx.logsumexp):
            _assert_follows(be, fn(x, axis=axis), x, f64, ())
    _assert_follows(be, sx.logsumexp(x), x, f64, ())
    _assert_follows(be, sx.logsumexp(x, keepdims=True), x, f64, ())


def test_empty_axis_keeps_namespace_and_shape(be: Backend) -> None:
    x = be.asarray(np.zeros((3, 0)), dtype="float64")
    f64 = be.dtype("float64")
    _assert_follows(be, sx.softmax(x), x, f64, (3, 0))
    _assert_follows(be, sx.log_softmax(x, axis=0), x, f64, (3, 0))
    _assert_follows(be, sx.logsumexp(x, axis=-1), x, f64, (3,))
    _assert_follows(be, sx.logsumexp(x, axis=0), x, f64, (0,))


@pytest.mark.parametrize("spelling", ["native", "compat"])
@pytest.mark.parametrize(("name", "call", "red"), CASES, ids=CASE_IDS)
def test_xp_accepts_native_module_and_compat_namespace(
    be: Backend, spelling: str, name: str, call: Any, red: Any
) -> None:
    x = be.asarray(X_VALUES, dtype="float64")
    ns = be.native if spelling == "native" else array_api_compat.array_namespace(x)
    out = call(x, xp=ns)
    _assert_follows(be, out, x, be.dtype("float64"), _expected_shape((3, 4), red))
    ref = call(x)
    np.testing.assert_array_equal(be.to_numpy(out), be.to_numpy(ref))


@pytest.mark.parametrize("spelling", ["native", "compat"])
def test_lists_and_scalars_are_converted_with_xp(be: Backend, spelling: str) -> None:
    ns = be.native if spelling == "native" else be.xp
    # what the namespace itself makes of the same list: its default device
    probe = ns.asarray([[1.0, 2.0], [3.0, 4.0]])
    want_ns = array_api_compat.array_namespace(probe)
    cases = [
        (sx.softmax([[1.0, 2.0], [3.0, 4.0]], xp=ns), (2, 2)),
        (sx.log_softmax([[1.0, 2.0], [3.0, 4.0]], axis=0, xp=ns), (2, 2)),
        (sx.softmin((1.0, 2.0, 3.0), xp=ns), (3,)),
        (sx.softmax([1, 2, 3], xp=ns), (3,)),
        (sx.logsumexp([[1.0, 2.0], [3.0, 4.0]], xp=ns), ()),
        (sx.logsumexp([1.0, 2.0], b=[1.0, 2.0], xp=ns), ()),
        (sx.logsumexp(3.0, xp=ns), ()),
        (sx.softmax(3.0, axis=None, xp=ns), ()),
    ]
    for out, shape in cases:
        assert array_api_compat.array_namespace(out) is want_ns
        assert type(out) is type(probe)
        assert array_api_compat.device(out) == array_api_compat.device(probe)
        assert out.dtype == be.default_float
        assert tuple(out.shape) == shape
    np.testing.assert_allclose(
        be.to_numpy(cases[0][0]),
        _scipy_special().softmax(np.array([[1.0, 2.0], [3.0, 4.0]]), axis=-1),
        rtol=8 * float(np.finfo(be.to_numpy(cases[0][0]).dtype).eps),
    )


def test_lists_and_scalars_without_xp_become_numpy() -> None:
    outs = [
        sx.softmax([[1.0, 2.0], [3.0, 4.0]]),
        sx.log_softmax([1.0, 2.0, 3.0]),
        sx.softmin((1, 2, 3)),
        sx.softmax([True, False]),
        sx.logsumexp([1.0, 2.0]),
        sx.logsumexp(3.0),
        sx.logsumexp(np.float64(3.0)),
        sx.softmax(2.0, axis=None),
        sx.log_softmax(2, axis=()),
        *sx.logsumexp([1.0, -2.0], b=[1.0, -3.0], return_sign=True),
    ]
    for out in outs:
        assert type(out) is np.ndarray
        assert out.dtype == np.float64


def test_numpy_zero_dimensional_results_are_arrays() -> None:
    x = np.array([[0.5, 1.0], [2.0, -1.0]])
    outs = [
        sx.logsumexp(x),
        sx.logsumexp(x, axis=None),
        sx.logsumexp(x, axis=(0, 1)),
        sx.logsumexp(x[0], axis=0),
        sx.logsumexp(x[0], axis=-1, b=np.array([1.0, 2.0])),
        sx.logsumexp(x, where=x > 0),
        sx.logsumexp(np.array(1.0)),
        sx.logsumexp(np.array(1.0), axis=()),
        sx.softmax(np.array(1.0), axis=None),
        sx.log_softmax(np.array(1.0), axis=()),
        sx.softmin(np.array(-np.inf), axis=None),
        sx.logsumexp(x.astype(np.float32)),
        sx.logsumexp(np.array([1, 2, 3])),
        *sx.logsumexp(x, return_sign=True),
        *sx.logsumexp(x[0], axis=0, b=np.array([1.0, -3.0]), return_sign=True),
    ]
    for out in outs:
        assert type(out) is np.ndarray
        assert out.shape == ()
    np.testing.assert_allclose(outs[0], _scipy_special().logsumexp(x), rtol=4 * F64_EPS)


# --- aliasing and input preservation --------------------------------------

# calls whose result could be a view of x if an implementation took a shortcut
ALIAS_CASES: list[tuple[str, Callable[[Any], Any]]] = [
    ("logsumexp-axis()", lambda x: sx.logsumexp(x, axis=())),
    (
        "logsumexp-size1-keepdims",
        lambda x: sx.logsumexp(x[:, :1], axis=-1, keepdims=True),
    ),
    ("logsumexp-size1", lambda x: sx.logsumexp(x[:, :1], axis=-1)),
    ("logsumexp-b-axis()", lambda x: sx.logsumexp(x, axis=(), b=1.0)),
    ("logsumexp-sign-axis()", lambda x: sx.logsumexp(x, axis=(), return_sign=True)),
    ("softmax", sx.softmax),
    ("softmax-axis()", lambda x: sx.softmax(x, axis=())),
    ("softmax-size1", lambda x: sx.softmax(x[:, :1])),
    ("log_softmax", lambda x: sx.log_softmax(x, axis=0)),
    ("log_softmax-axis()", lambda x: sx.log_softmax(x, axis=())),
    ("softmin", sx.softmin),
    ("softmax-dtype-same", lambda x: sx.softmax(x, dtype=x.dtype)),
    ("logsumexp-dtype-same", lambda x: sx.logsumexp(x, axis=(), dtype=x.dtype)),
    ("softmax-temperature1", lambda x: sx.softmax(x, axis=(), temperature=1.0)),
]


def _special_values() -> np.ndarray:
    return np.array(
        [
            [0.5, -1.0, 2.0, 3.0],
            [-np.inf, 1.0, -np.inf, 0.0],
            [np.inf, 1.0, np.nan, -2.0],
            [-np.inf, -np.inf, -np.inf, -np.inf],
        ]
    )


@pytest.mark.parametrize(("name", "call"), ALIAS_CASES, ids=[c[0] for c in ALIAS_CASES])
def test_results_never_alias_or_modify_the_input(
    be: Backend, name: str, call: Any
) -> None:
    x_np = _special_values()
    x = be.asarray(x_np, dtype="float64")
    outs = _as_tuple(call(x))
    # the input is untouched
    np.testing.assert_array_equal(be.to_numpy(x), x_np)
    for out in outs:
        assert out is not x
    if be.lazy or be.jax:
        return  # immutable arrays: writing to the result is not possible
    for out in outs:
        if be.name == "numpy":
            assert not np.shares_memory(out, x)
        if be.name.startswith("torch"):
            assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
        out[...] = 7.0
    np.testing.assert_array_equal(be.to_numpy(x), x_np)


def test_where_b_and_temperature_arrays_are_not_modified(be: Backend) -> None:
    x_np = _special_values()
    w_np = np.array([[True, False, True, True]] * 3 + [[False] * 4])
    t_np = np.array([[0.5], [2.0], [1.0], [3.0]])
    b_np = np.array([1.0, 0.0, -2.0, 0.5])
    x = be.asarray(x_np, dtype="float64")
    w = be.asarray(w_np, dtype="bool")
    t = be.asarray(t_np, dtype="float64")
    b = be.asarray(b_np, dtype="float64")
    for fn in (sx.softmax, sx.log_softmax, sx.softmin):
        be.compute(fn(x, where=w, temperature=t))
    be.compute(sx.logsumexp(x, axis=-1, b=b, where=w, return_sign=True)[0])
    np.testing.assert_array_equal(be.to_numpy(x), x_np)
    np.testing.assert_array_equal(be.to_numpy(w), w_np)
    np.testing.assert_array_equal(be.to_numpy(t), t_np)
    np.testing.assert_array_equal(be.to_numpy(b), b_np)


# --- NumPy memory layouts ----------------------------------------------------


def _layouts() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(20240611)
    base = rng.standard_normal((6, 10)) * 3.0
    readonly = base.copy()
    readonly.flags.writeable = False
    row = rng.standard_normal(7) * 3.0
    return [
        ("readonly", readonly),
        ("strided-columns", base[:, ::2]),
        ("strided-rows", base[::3]),
        ("negative-stride-rows", base[::-1]),
        ("negative-stride-columns", base[:, ::-3]),
        ("transposed", base.T),
        ("fortran", np.asfortranarray(base)),
        ("broadcast-zero-stride", np.broadcast_to(row, (4, 7))),
        ("readonly-strided", readonly[1::2, ::-2]),
        ("float32-fortran", np.asfortranarray(base.astype(np.float32))),
    ]


LAYOUTS = _layouts()


def _tol(dtype: np.dtype, x: np.ndarray) -> dict[str, float]:
    eps = float(np.finfo(dtype).eps)
    # absolute term: log-domain outputs carry errors relative to max|x|
    return {"rtol": 8 * eps, "atol": 8 * eps * max(1.0, float(np.max(np.abs(x))))}


@needs("numpy")
@pytest.mark.parametrize(("layout", "x"), LAYOUTS, ids=[n for n, _ in LAYOUTS])
@pytest.mark.parametrize("axis", [-1, 0, None, (0, 1)])
def test_numpy_layouts_work_and_are_not_modified(
    layout: str, x: np.ndarray, axis: Any
) -> None:
    before = x.copy(order="K")
    flags_before = (x.flags.writeable, x.flags.c_contiguous, x.flags.f_contiguous)
    x64 = x.astype(np.float64)
    tol = _tol(x.dtype, x)
    cases = [
        (sx.softmax(x, axis=axis), _scipy_special().softmax(x64, axis=axis)),
        (sx.log_softmax(x, axis=axis), _scipy_special().log_softmax(x64, axis=axis)),
        (sx.softmin(x, axis=axis), _scipy_special().softmax(-x64, axis=axis)),
        (sx.logsumexp(x, axis=axis), _scipy_special().logsumexp(x64, axis=axis)),
        (
            sx.softmax(x, axis=axis, temperature=2.0),
            _scipy_special().softmax(x64 / 2.0, axis=axis),
        ),
    ]
    for out, ref in cases:
        assert type(out) is np.ndarray
        assert out.dtype == x.dtype
        assert out.shape == np.shape(ref)
        assert not np.shares_memory(out, x)
        np.testing.assert_allclose(out, ref, **tol)
    np.testing.assert_array_equal(x, before)
    assert (
        x.flags.writeable,
        x.flags.c_contiguous,
        x.flags.f_contiguous,
    ) == flags_before


@needs("numpy")
def test_numpy_readonly_and_strided_options() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 8))
    w_full = rng.random((5, 16)) < 0.7
    w_full[:, 0] = True
    t = np.array([[0.5], [1.0], [2.0], [4.0], [1.5]])
    for arr in (x, w_full, t):
        arr.flags.writeable = False
    w = w_full[:, ::2]  # read-only and non-contiguous
    b = np.broadcast_to(np.linspace(0.5, 2.0, 8), (5, 8))  # read-only, zero stride
    snapshot = [a.copy() for a in (x, w, b, t)]

    # reference: delete the masked entries row by row (float64 on finite input)
    p_ref = np.zeros_like(x)
    lse_ref = np.empty(5)
    lse_b_ref = np.empty(5)
    for i in range(5):
        z = x[i][w[i]] / t[i, 0]
        p_ref[i][w[i]] = _scipy_special().softmax(z)
        lse_ref[i] = _scipy_special().logsumexp(x[i][w[i]])
        lse_b_ref[i] = _scipy_special().logsumexp(x[i][w[i]], b=b[i][w[i]])
    tol = _tol(np.dtype(np.float64), x)
    np.testing.assert_allclose(sx.softmax(x, where=w, temperature=t), p_ref, **tol)
    np.testing.assert_allclose(sx.logsumexp(x, axis=-1, where=w), lse_ref, **tol)
    np.testing.assert_allclose(sx.logsumexp(x, axis=-1, where=w, b=b), lse_b_ref, **tol)
    for arr, snap in zip((x, w, b, t), snapshot, strict=True):
        np.testing.assert_array_equal(arr, snap)


# --- torch inputs that require grad ------------------------------------------


@needs("torch")
def test_torch_input_requiring_grad() -> None:
    import torch

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    x_before = x.detach().clone()
    mask = torch.rand(4, 6, generator=gen) < 0.8
    mask[:, 0] = True
    eps = torch.finfo(torch.float64).eps
    tol = {"rtol": 8 * eps, "atol": 8 * eps * 4.0}
    xd = x.detach()
    cases = [
        (sx.softmax(x), torch.softmax(xd, -1)),
        (sx.log_softmax(x, axis=0), torch.log_softmax(xd, 0)),
        (sx.softmin(x), torch.softmax(-xd, -1)),
        (sx.softmax(x, temperature=2.0), torch.softmax(xd / 2.0, -1)),
        (sx.logsumexp(x, axis=-1), torch.logsumexp(xd, -1)),
        (sx.logsumexp(x), torch.logsumexp(xd.reshape(-1), 0)),
        (
            sx.softmax(x, where=mask),
            torch.softmax(xd.masked_fill(~mask, -torch.inf), -1),
        ),
        (sx.softmax(x, dtype=torch.float32), torch.softmax(xd, -1).to(torch.float32)),
        (sx.softmax(x.T, axis=0), torch.softmax(xd.T, 0)),
    ]
    for out, ref in cases:
        assert isinstance(out, torch.Tensor)
        assert out.dtype == ref.dtype
        assert out.shape == ref.shape
        assert out.device == x.device
        assert out.requires_grad
        t = {
            "rtol": 8 * torch.finfo(out.dtype).eps,
            "atol": 8 * torch.finfo(out.dtype).eps * 4,
        }
        torch.testing.assert_close(
            out.detach(), ref, **(tol if out.dtype == torch.float64 else t)
        )
    assert torch.equal(x.detach(), x_before)
    assert x.grad is None
    # the graph is usable
    sx.logsumexp(x).backward()
    torch.testing.assert_close(
        x.grad, torch.softmax(xd.reshape(-1), 0).reshape(4, 6), **tol
    )


@needs("torch")
def test_torch_requires_grad_option_arrays() -> None:
    import torch

    x = torch.tensor(
        [[0.5, -1.0, 2.0], [1.0, 3.0, -2.0]], dtype=torch.float64, requires_grad=True
    )
    t = torch.tensor([[2.0], [0.5]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64, requires_grad=True)
    out = sx.softmax(x, temperature=t)
    assert out.requires_grad
    assert out.shape == (2, 3)
    lse = sx.logsumexp(x, axis=-1, b=b)
    assert lse.requires_grad
    assert lse.shape == (2,)
    eps = torch.finfo(torch.float64).eps
    xd, td, bd = x.detach(), t.detach(), b.detach()
    torch.testing.assert_close(
        out.detach(), torch.softmax(xd / td, -1), rtol=8 * eps, atol=8 * eps
    )
    torch.testing.assert_close(
        lse.detach(),
        torch.logsumexp(xd + torch.log(bd), -1),
        rtol=8 * eps,
        atol=8 * eps * 4,
    )
