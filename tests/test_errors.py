"""Every error of docs/contract.md ("Errors") and docs/decisions.md, on every backend.

Each case checks the exception type and that the message starts with the
function's name and names the parameter (and, where it is cheap to name, the
offending value, dtype or shape). Errors are raised at call time, before any
computation, also on Dask (nothing is computed here).
"""

from __future__ import annotations

import importlib.util
import math
import re
import warnings
from typing import Any

import array_api_compat
import numpy as np
import pytest
from conftest import needs

import softmax_xp as sx

FAMILY = ("softmax", "log_softmax", "softmin")
KINDS = (*FAMILY, "logsumexp")


def raises(
    exc: type[Exception],
    kind: str,
    param: str,
    *args: Any,
    also: tuple[str, ...] = (),
    **kw: Any,
) -> str:
    """Call ``sx.<kind>(*args, **kw)`` and check the error it must raise."""
    with pytest.raises(exc) as info:
        getattr(sx, kind)(*args, **kw)
    msg = str(info.value)
    assert msg.startswith(f"{kind}:"), msg
    assert re.search(rf"\b{re.escape(param)}\b", msg), (
        f"parameter {param!r} not named: {msg}"
    )
    for text in also:
        assert text in msg, f"{text!r} not in: {msg}"
    return msg


def _x(be: Any, shape: tuple[int, ...] = (3, 4), dtype: str = "float64") -> Any:
    return be.asarray(np.zeros(shape), dtype=dtype)


def _foreign_array(be: Any, data: Any) -> Any:
    """``data`` as an array of a library other than the backend's.

    For NumPy that is array-api-strict (in every full test session) or torch.
    """
    if be.native is not np:
        return np.asarray(data)
    if importlib.util.find_spec("array_api_strict") is not None:
        import array_api_strict

        return array_api_strict.asarray(np.asarray(data))
    torch = pytest.importorskip("torch")
    return torch.asarray(np.asarray(data))


def _foreign_namespaces(be: Any) -> list[Any]:
    """Namespaces of other libraries than the backend's: native modules and compat wrappers."""
    out: list[Any] = []
    if be.native is not np:
        import array_api_compat.numpy

        out += [np, array_api_compat.numpy]
    elif importlib.util.find_spec("torch") is not None:
        import array_api_compat.torch
        import torch

        out += [torch, array_api_compat.torch]
    if not be.name.startswith("array_api_strict") and importlib.util.find_spec(
        "array_api_strict"
    ):
        import array_api_strict

        out.append(array_api_strict)
    if not out:
        pytest.skip("no array library other than NumPy is installed")
    return out


# --------------------------------------------------------------------------
# axis
# --------------------------------------------------------------------------

BAD_AXES = [
    (2, ValueError),
    (-3, ValueError),
    (7, ValueError),
    ((0, 2), ValueError),
    ((0, 0), ValueError),
    ((1, -1), ValueError),
    ((-2, 0), ValueError),
    (1.0, TypeError),
    (True, TypeError),
    (False, TypeError),
    ((0, 1.0), TypeError),
    ((True,), TypeError),
    ("1", TypeError),
    ([0, 1], TypeError),
    (np.float64(0.0), TypeError),
]


@pytest.mark.parametrize(("axis", "exc"), BAD_AXES, ids=[repr(a) for a, _ in BAD_AXES])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_axis(be, kind, axis, exc):
    raises(exc, kind, "axis", _x(be, (3, 4)), axis=axis, also=(repr(axis),))


@pytest.mark.parametrize("kind", KINDS)
def test_axis_on_zero_d(be, kind):
    x = be.asarray(1.5, dtype=be.dtype("float64"))
    if kind != "logsumexp":
        raises(ValueError, kind, "axis", x)  # the default axis -1 does not exist
    for axis in (0, -1, (0,)):
        raises(ValueError, kind, "axis", x, axis=axis)


def test_axis_on_one_d(be):
    x = _x(be, (4,))
    for kind in KINDS:
        raises(ValueError, kind, "axis", x, axis=1)
        raises(ValueError, kind, "axis", x, axis=(0, -1))


# --------------------------------------------------------------------------
# where
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_where_not_boolean(be, kind):
    x = _x(be)
    for name in ("int32", "int64", "float64", "uint8"):
        w = be.asarray(np.ones((3, 4)), dtype=be.dtype(name))
        raises(TypeError, kind, "where", x, where=w, also=(name,))
    for w in ([1, 0, 1, 1], [0.5, 1.0, 1.0, 1.0], 1, 1.0, [[1], [0], [1]]):
        raises(TypeError, kind, "where", x, where=w)


@pytest.mark.parametrize(
    "wshape",
    [(3,), (2, 4), (4, 3), (2, 3, 4), (1, 3, 4), (4, 1)],
)
@pytest.mark.parametrize("kind", KINDS)
def test_where_not_broadcastable(be, kind, wshape):
    """where must broadcast to x's shape without enlarging it."""
    w = be.asarray(np.ones(wshape, dtype=bool))
    raises(ValueError, kind, "where", _x(be), where=w, also=(str(wshape),))


@pytest.mark.parametrize("kind", KINDS)
def test_where_list_of_wrong_length(be, kind):
    raises(ValueError, kind, "where", _x(be), where=[True, False])


def test_where_must_fit_the_joint_shape_of_x_and_b(be):
    x = _x(be, (4,))
    b = _x(be, (3, 4))
    # fits the joint (3, 4) shape: fine
    sx.logsumexp(x, axis=-1, b=b, where=be.asarray(np.ones((3, 4), dtype=bool)))
    for wshape in ((2, 4), (2, 3, 4), (3,)):
        w = be.asarray(np.ones(wshape, dtype=bool))
        raises(ValueError, "logsumexp", "where", x, axis=-1, b=b, where=w)


# --------------------------------------------------------------------------
# temperature
# --------------------------------------------------------------------------

BAD_TEMPERATURES = [
    (0, ValueError),
    (0.0, ValueError),
    (-0.0, ValueError),
    (-1, ValueError),
    (-0.5, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (True, TypeError),
    (False, TypeError),
    (np.True_, TypeError),
    (1j, TypeError),
    ("2.0", TypeError),
]


@pytest.mark.parametrize(
    ("t", "exc"), BAD_TEMPERATURES, ids=[repr(t) for t, _ in BAD_TEMPERATURES]
)
@pytest.mark.parametrize("kind", FAMILY)
def test_bad_temperature_scalar(be, kind, t, exc):
    raises(exc, kind, "temperature", _x(be), temperature=t)


@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_array_of_wrong_kind(be, kind):
    """Arrays are not inspected for values, but complex and bool dtypes are refused."""
    x = _x(be)
    for name, data in (
        ("complex128", np.ones(4) + 0j),
        ("bool", np.ones(4, dtype=bool)),
    ):
        t = be.asarray(data, dtype=be.dtype(name))
        raises(TypeError, kind, "temperature", x, temperature=t, also=(name,))


@pytest.mark.parametrize("tshape", [(3,), (2, 4), (4, 1), (2, 3, 4), (1, 3, 4)])
@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_not_broadcastable(be, kind, tshape):
    t = be.asarray(np.ones(tshape), dtype=be.dtype("float64"))
    raises(ValueError, kind, "temperature", _x(be), temperature=t, also=(str(tshape),))
    if len(tshape) == 1:
        raises(ValueError, kind, "temperature", _x(be), temperature=[1.0] * tshape[0])


# --------------------------------------------------------------------------
# b
# --------------------------------------------------------------------------


@pytest.mark.parametrize("bshape", [(3,), (2, 4), (4, 3), (2, 3, 5)])
def test_b_not_broadcastable(be, bshape):
    b = be.asarray(np.ones(bshape), dtype=be.dtype("float64"))
    raises(ValueError, "logsumexp", "b", _x(be), b=b, also=(str(bshape),))
    raises(ValueError, "logsumexp", "b", _x(be), b=b, return_sign=True)


def test_b_list_of_wrong_length(be):
    raises(ValueError, "logsumexp", "b", _x(be), b=[1.0, 2.0])


# --------------------------------------------------------------------------
# dtype=
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_not_real_floating(be, kind):
    x = _x(be, dtype="float32")
    for name in ("int32", "int64", "uint8", "bool", "complex64", "complex128"):
        raises(TypeError, kind, "dtype", x, dtype=be.dtype(name))
    for text in ("float32", "float64", "f8"):
        raises(TypeError, kind, "dtype", x, dtype=text, also=(repr(text),))


@pytest.mark.parametrize("kind", KINDS)
def test_dtype_of_another_library(be, kind):
    x = _x(be, dtype="float32")
    others: list[Any] = []
    if be.name.startswith(("torch", "array_api_strict")):
        others += [np.float32, np.dtype("float64")]
    if not be.name.startswith("torch") and importlib.util.find_spec("torch"):
        import torch

        others += [torch.float32, torch.float64]
    if not be.name.startswith("array_api_strict") and importlib.util.find_spec(
        "array_api_strict"
    ):
        import array_api_strict

        others += [array_api_strict.float32, array_api_strict.float64]
    if not others:
        pytest.skip("no array library besides the backend's is installed")
    for dt in others:
        raises(TypeError, kind, "dtype", x, dtype=dt)


# --------------------------------------------------------------------------
# x
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cname", ["complex64", "complex128"])
@pytest.mark.parametrize("kind", FAMILY)
def test_complex_x_only_for_logsumexp(be, kind, cname):
    x = be.asarray(np.ones((3, 4)) + 1j, dtype=be.dtype(cname))
    raises(TypeError, kind, "x", x, also=(cname,))
    raises(TypeError, kind, "x", x, axis=None, where=be.asarray(np.ones(4, dtype=bool)))
    out = sx.logsumexp(x)  # logsumexp takes it
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(x)


UNSUPPORTED_X = [
    "abc",
    b"abc",
    {"a": 1.0},
    None,
    {1.0, 2.0},
    object(),
    range(3),
    np.float64,
]


@pytest.mark.parametrize(
    "x", UNSUPPORTED_X, ids=[type(v).__name__ for v in UNSUPPORTED_X]
)
@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_x(kind, x):
    raises(TypeError, kind, "x", x, also=(type(x).__name__,))


@pytest.mark.parametrize("kind", KINDS)
def test_ragged_or_non_numeric_lists(kind):
    """Lists that make no numeric array: our error, not NumPy's."""
    raises(ValueError, kind, "x", [[1.0, 2.0], [3.0]])
    raises(TypeError, kind, "x", ["a", "b"], also=("dtype",))
    raises(TypeError, kind, "x", [None, 1.0], also=("dtype",))


@pytest.mark.parametrize("kind", KINDS)
def test_unsupported_x_with_xp(be, kind):
    for x in UNSUPPORTED_X:
        raises(TypeError, kind, "x", x, xp=be.native)


# --------------------------------------------------------------------------
# mixed namespaces and xp=
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_namespaces(be, kind):
    x = _x(be)
    raises(
        TypeError,
        kind,
        "where",
        x,
        where=_foreign_array(be, np.ones((3, 4), dtype=bool)),
    )
    if kind == "logsumexp":
        raises(TypeError, kind, "b", x, b=_foreign_array(be, np.ones((3, 4))))
        raises(
            TypeError,
            kind,
            "b",
            x,
            b=_foreign_array(be, np.ones((3, 4))),
            return_sign=True,
        )
    else:
        raises(
            TypeError,
            kind,
            "temperature",
            x,
            temperature=_foreign_array(be, np.ones((3, 4))),
        )
        raises(TypeError, kind, "temperature", x, temperature=_foreign_array(be, 2.0))


@needs("torch")
@pytest.mark.parametrize("kind", KINDS)
def test_numpy_where_with_torch_x(kind):
    import torch

    x = torch.zeros((2, 3), dtype=torch.float64)
    raises(TypeError, kind, "where", x, where=np.ones((2, 3), dtype=bool))
    raises(
        TypeError,
        kind,
        "where",
        np.zeros((2, 3)),
        where=torch.ones((2, 3), dtype=torch.bool),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_xp_of_another_library(be, kind):
    x = _x(be)
    for ns in _foreign_namespaces(be):
        raises(TypeError, kind, "xp", x, xp=ns)


# --------------------------------------------------------------------------
# arrays that carry their own mask, index or sparse layout (issue 10)
# --------------------------------------------------------------------------

# (parameter, keyword) for every array-valued parameter of each function
_ARRAY_PARAMS = {
    "softmax": ("where", "temperature"),
    "log_softmax": ("where", "temperature"),
    "softmin": ("where", "temperature"),
    "logsumexp": ("where", "b"),
}


def _matrix(data: Any) -> Any:
    """``np.matrix(data)`` without its PendingDeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(data)


def _np_carriers() -> list[tuple[str, Any, str]]:
    """(id, a float carrier of shape (3, 4), advice for x) built from NumPy/SciPy/pandas."""
    data = np.zeros((3, 4))
    out: list[tuple[str, Any, str]] = [
        (
            "masked",
            np.ma.masked_array(data, mask=data > 0),
            "x.data with where=~x.mask",
        ),
        ("masked-nomask", np.ma.masked_array(data), "x.data with where=~x.mask"),
        ("matrix", _matrix(data), "np.asarray(x)"),
    ]
    if importlib.util.find_spec("scipy") is not None:
        import scipy.sparse

        out.append(("scipy-csr", scipy.sparse.csr_array(data), "x.toarray()"))
        out.append(("scipy-coo-matrix", scipy.sparse.coo_matrix(data), "x.toarray()"))
    if importlib.util.find_spec("pandas") is not None:
        import pandas as pd

        out.append(("pandas", pd.DataFrame(data), "x.to_numpy()"))
    return out


NP_CARRIERS = _np_carriers()


@pytest.mark.parametrize(
    ("obj", "advice"),
    [c[1:] for c in NP_CARRIERS],
    ids=[c[0] for c in NP_CARRIERS],
)
@pytest.mark.parametrize("kind", KINDS)
def test_masked_and_indexed_x_refused(kind, obj, advice):
    """softmax(np.ma.masked_array(...)) used to ignore the mask and return a result."""
    for _ in range(2):  # the second call must not find a cached plain path
        raises(TypeError, kind, "x", obj, also=(advice,))
    if kind != "logsumexp":
        # a plain ndarray first fills the plain-call cache; subclasses still fail
        getattr(sx, kind)(np.zeros((3, 4)))
        raises(TypeError, kind, "x", obj, also=(advice,))


def test_masked_streaming_inputs_refused():
    data = np.zeros((2, 3))
    m = np.ma.masked_array(data, mask=data > 0)
    raises(TypeError, "logsumexp_state", "x", m, also=("where=~x.mask",))
    state = sx.logsumexp_state(data, -1, keepdims=True)
    for kind in ("softmax_from_state", "log_softmax_from_state"):
        raises(TypeError, kind, "x", m, state)
        raises(
            TypeError, kind, "where", data, state, where=np.ma.masked_array([True] * 3)
        )
        bad = sx.LogSumExpState(np.ma.masked_array(state.max), state.rest)
        raises(TypeError, kind, "state.max", data, bad)
    bad = sx.LogSumExpState(state.max, _matrix(state.rest))
    raises(TypeError, "logsumexp_finish", "state.rest", bad, also=("np.asarray",))
    raises(TypeError, "logsumexp_combine", "states[1].rest", state, bad)


@pytest.mark.parametrize("kind", KINDS)
def test_masked_where_b_temperature_refused(be, kind):
    """The other array parameters refuse NumPy masked arrays too, whatever x's library."""
    x = _x(be)
    for param in _ARRAY_PARAMS[kind]:
        value: Any = np.ones((3, 4), dtype=bool if param == "where" else float)
        value = np.ma.masked_array(value, mask=np.zeros((3, 4), dtype=bool))
        raises(TypeError, kind, param, x, **{param: value}, also=("masked array",))
        raises(TypeError, kind, param, x, **{param: _matrix(value.data)})


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_and_masked_backend_arrays_refused(be, kind):
    """Each library's own sparse or masked arrays: torch sparse layouts and
    MaskedTensor, JAX BCOO, Dask arrays of masked chunks."""
    cases: list[tuple[Any, str]] = []
    data = np.arange(12.0).reshape(3, 4)
    if be.name.startswith("torch"):
        import torch
        from torch.masked import masked_tensor

        t = be.asarray(data)
        with warnings.catch_warnings():  # CSR and MaskedTensor are beta/prototype
            warnings.simplefilter("ignore", UserWarning)
            cases += [
                (t.to_sparse(), ".to_dense()"),
                (t.to_sparse_csr(), ".to_dense()"),
                (masked_tensor(t, torch.ones_like(t, dtype=torch.bool)), "get_mask()"),
            ]
        getattr(sx, kind)(t)  # a dense call first: a sparse one must not reuse it
    elif be.jax:
        from jax.experimental import sparse

        cases.append((sparse.BCOO.fromdense(be.asarray(data)), ".todense()"))
    elif be.name == "dask":
        import dask.array as da

        m = da.ma.masked_array(be.asarray(data), mask=be.asarray(data > 5))
        cases.append((m, "da.ma.getdata"))
        getattr(sx, kind)(be.asarray(data))
    else:
        pytest.skip(f"{be.name} has no sparse or masked array type of its own")
    for obj, advice in cases:
        raises(TypeError, kind, "x", obj, also=(advice,))
        for param in _ARRAY_PARAMS[kind]:
            if param != "where":
                raises(TypeError, kind, param, be.asarray(data), **{param: obj})


# --------------------------------------------------------------------------
# arrays as axis, huge temperatures and integers, complex b, flags (issue 10)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_array_axis(be, kind):
    """axis=np.array([0, 1]) used to raise NumPy's own TypeError from operator.index."""
    x = _x(be)
    bad = [be.asarray(np.array([0, 1])), be.asarray(np.array([1])), np.array([0, 1])]
    bad += [be.asarray(np.array(1.0)), be.asarray(np.array(True))]
    for axis in bad:
        raises(TypeError, kind, "axis", x, axis=axis)
        raises(TypeError, kind, "axis", x, axis=(0, axis))
    if be.lazy:  # a Dask value would need a compute: refused (docs/decisions.md)
        raises(TypeError, kind, "axis", x, axis=be.asarray(np.array(1)))
        return
    # a 0-d integer array indexes like an int: same result as axis=1
    y = be.asarray(np.arange(12.0).reshape(3, 4))
    got = be.to_numpy(getattr(sx, kind)(y, axis=be.asarray(np.array(1))))
    np.testing.assert_array_equal(got, be.to_numpy(getattr(sx, kind)(y, axis=1)))


HUGE = [10**400, -(10**400)]


@pytest.mark.parametrize("t", HUGE, ids=["1e400", "-1e400"])
@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_beyond_float(be, kind, t):
    """temperature=10**400 used to raise OverflowError from float()."""
    raises(ValueError, kind, "temperature", _x(be), temperature=t)


# (input dtype, compute dtype, a temperature that fails, why)
TEMPERATURE_RANGE = [
    ("float32", "float32", 1e-46, "rounds to 0"),
    ("float32", "float32", 1e-39, "subnormal"),
    ("float32", "float32", 1e-45, "smallest subnormal"),
    ("float32", "float32", 1e39, "rounds to inf"),
    ("float32", "float32", 3.5e38, "above max"),
    ("float16", "float32", 1e-39, "subnormal in float32"),
    ("float16", "float32", 1e39, "inf in float32"),
    ("bfloat16", "float32", 1e-40, "subnormal in float32"),
    ("float64", "float64", 1e-310, "subnormal"),
    ("float64", "float64", 5e-324, "smallest subnormal"),
]


@pytest.mark.parametrize(
    ("dtype", "compute", "t", "why"),
    TEMPERATURE_RANGE,
    ids=[f"{d}-{t:g}" for d, _, t, _ in TEMPERATURE_RANGE],
)
@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_not_normal_in_compute_dtype(be, kind, dtype, compute, t, why):
    """softmax(float32([0, 1]), temperature=1e-46) used to give [nan, nan]."""
    if dtype not in be.float_dtypes:
        pytest.skip(f"{be.name} has no {dtype}")
    x = be.asarray(np.array([0.0, 1.0]), dtype=dtype)
    raises(ValueError, kind, "temperature", x, temperature=t, also=(repr(t), compute))
    # dtype= decides the compute dtype too
    if dtype != "float64" and "float64" in be.float_dtypes and t > 1e-300 and t < 1e300:
        y = be.asarray(np.array([0.0, 1.0]), dtype="float64")
        raises(ValueError, kind, "temperature", y, temperature=t, dtype=be.dtype(dtype))


@pytest.mark.parametrize("kind", FAMILY)
def test_temperature_normal_bounds_accepted(be, kind):
    """The smallest normal and the largest finite value of the compute dtype are fine."""
    names = [n for n in ("float16", "float32", "float64") if n in be.float_dtypes]
    for name in names:
        fi = np.finfo(np.float32 if name == "float16" else name)
        x = be.asarray(np.array([0.0, 0.0]), dtype=name)
        for t in (float(fi.smallest_normal), float(fi.max)):
            out = be.to_numpy(getattr(sx, kind)(x, temperature=t))
            want = [-math.log(2)] * 2 if kind == "log_softmax" else [0.5, 0.5]
            np.testing.assert_allclose(out, want, rtol=1e-3)
    # float16 input computes in float32: a temperature subnormal in float16 is fine
    if "float16" in be.float_dtypes:
        x = be.asarray(np.array([0.0, 1e-7]), dtype="float16")
        out = be.to_numpy(sx.softmax(x, temperature=1e-7))
        # x / t = [0, 1.0000000195...] (float16(1e-7) / float32(1e-7))
        z = float(np.float16(1e-7)) / float(np.float32(1e-7))
        p1 = 1.0 / (1.0 + math.exp(-z))
        np.testing.assert_allclose(out, [1 - p1, p1], rtol=2e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_integers_beyond_64_bits_in_lists(be, kind):
    """softmax([10**30, 1], xp=jnp) used to raise OverflowError deep inside JAX
    (NumPy made an object array, torch raised its own ValueError)."""
    big = [10**30, 1]
    raises(ValueError, kind, "x", big, xp=be.native, also=("1.000e+30",))
    raises(ValueError, kind, "x", [big, big], axis=-1, xp=be.native)
    raises(ValueError, kind, "x", -(10**30), axis=None, xp=be.native)
    raises(ValueError, kind, "x", big)  # NumPy, no xp
    x = _x(be, (2,))
    raises(ValueError, kind, "where", x, where=big)
    second = "b" if kind == "logsumexp" else "temperature"
    raises(ValueError, kind, second, x, **{second: big})


def test_complex_b_with_real_x(be):
    """logsumexp(np.ones(2), b=[1+1j, 1]) used to return a complex result."""
    x = _x(be, (2,))
    for b in (
        be.asarray(np.array([1 + 1j, 1.0]), dtype="complex128"),
        be.asarray(np.array([1.0, 1.0]), dtype="complex64"),
        1j,
        [1j, 1.0],
    ):
        raises(TypeError, "logsumexp", "b", x, b=b, also=("complex",))
        raises(TypeError, "logsumexp", "b", x, b=b, return_sign=True)
    # complex x takes complex b: log(b0 e^x0 + b1 e^x1), computed here directly
    xc = be.asarray(np.array([0.5 + 1j, -0.25]), dtype="complex128")
    bc = be.asarray(np.array([1 + 1j, 2.0]), dtype="complex128")
    want = np.log((1 + 1j) * np.exp(0.5 + 1j) + 2.0 * np.exp(-0.25))
    got = be.to_numpy(sx.logsumexp(xc, b=bc))
    np.testing.assert_allclose(got, want, rtol=1e-13)


BAD_FLAGS = ["no", "", 1, 0, None, 1.0, np.int64(1), [True]]


@pytest.mark.parametrize("flag", BAD_FLAGS, ids=[repr(f) for f in BAD_FLAGS])
def test_flags_must_be_bools(be, flag):
    """keepdims="no" used to count as True."""
    x = _x(be)
    raises(TypeError, "logsumexp", "keepdims", x, keepdims=flag, also=(repr(flag),))
    raises(TypeError, "logsumexp", "return_sign", x, return_sign=flag)
    raises(TypeError, "logsumexp_state", "keepdims", x, keepdims=flag)


def test_numpy_bools_are_flags(be):
    x = be.asarray(np.zeros((2, 3)))
    lse, sign = sx.logsumexp(x, axis=-1, keepdims=np.True_, return_sign=np.True_)
    assert tuple(lse.shape) == (2, 1)
    np.testing.assert_allclose(be.to_numpy(lse), np.full((2, 1), math.log(3)))
    np.testing.assert_array_equal(be.to_numpy(sign), np.ones((2, 1)))
    out = sx.logsumexp(x, axis=-1, keepdims=np.False_, return_sign=np.False_)
    assert not isinstance(out, tuple)
    assert tuple(out.shape) == (2,)
    assert tuple(sx.logsumexp_state(x, -1, keepdims=np.True_).max.shape) == (2, 1)
