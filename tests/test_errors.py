"""Every error of DESIGN §2 ("Errors" and the decisions at the edges), on every backend.

Each case checks the exception type and that the message starts with the
function's name and names the parameter (and, where it is cheap to name, the
offending value, dtype or shape). Errors are raised at call time, before any
computation, also on Dask (nothing is computed here).
"""

from __future__ import annotations

import importlib.util
import math
import re
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
