"""Every fast path gives the generic path's answer, on every backend of the matrix.

The generic core (``softmax_xp.force_generic()``) defines the contract; each
call below runs once on the backend's fast path and once on the generic core,
on the same inputs. Special values (NaN, +-inf, exact zeros) must sit in the
same places; finite values may differ only by summation order, i.e. within a
few units of the compute dtype's epsilon (plus one rounding of a half-precision
output). Backends without a fast path (array-api-strict, CuPy) compare the
generic core with itself, which still checks the switch.

The accuracy of either path against mpmath is test_accuracy's job; the whole
suite goes through the public functions, so it covers the fast paths too.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import assert_same_special_positions
from conftest import Backend, needs

import softmax_xp as sx
from softmax_xp import _fast
from softmax_xp._compat import array_namespace

NAN, INF = math.nan, math.inf
FAMILY = ("softmax", "log_softmax", "softmin")
KINDS = (*FAMILY, "logsumexp")
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23}
EPS64 = 2.0**-52


def _rows(width: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Ordinary rows and one row per special case of the contract table."""
    normal = rng.normal(0.0, scale, size=(5, width))
    special = np.array(
        [
            [NAN] + [1.0] * (width - 1),
            [INF, 1.0, INF] + [-INF] * (width - 3),
            [-INF] * width,
            [INF] * width,
            [-INF, 0.5, -INF] + [2.0] * (width - 3),
            [scale] * width,  # all tied
            [0.0, -40.0] + [-INF] * (width - 2),  # the log1p row
        ]
    )
    return np.concatenate([normal, special])


def _inputs(dtype: str, rng: np.random.Generator, width: int = 11) -> np.ndarray:
    scale = 4.0 if dtype in ("float16", "bfloat16") else 30.0
    x = _rows(width, scale, rng)
    if dtype.startswith("int"):
        x = np.where(np.isfinite(x), np.round(x), 0.0)
    return x


def _check_same(be: Backend, fast: Any, generic: Any, out_dtype: str) -> None:
    a = be.to_numpy(fast).astype(np.float64)
    b = be.to_numpy(generic).astype(np.float64)
    assert_same_special_positions(a, b)
    ok = np.isfinite(a) & np.isfinite(b)
    # two summation orders in the compute dtype, then (half) one rounding each
    eps = EPS.get(out_dtype, EPS64)
    compute_eps = (
        EPS64 if out_dtype == "float64" or out_dtype.startswith("int") else 2.0**-23
    )
    rtol = 8 * compute_eps + (eps if out_dtype in ("float16", "bfloat16") else 0.0)
    atol = 8 * compute_eps * (1.0 + np.max(np.abs(b[ok]), initial=0.0))
    err = np.abs(a[ok] - b[ok])
    bound = rtol * np.abs(b[ok]) + atol
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert (err <= bound).all(), (
        f"fast {a[ok][worst]!r} vs generic {b[ok][worst]!r} (bound {bound[worst]:.3g})"
    )


def _call(kind: str, x: Any, axis: Any, **kw: Any) -> Any:
    fn = getattr(sx, kind)
    return fn(x, axis=axis, **kw)


def _both(kind: str, x: Any, axis: Any, **kw: Any) -> tuple[Any, Any]:
    fast = _call(kind, x, axis, **kw)
    with sx.force_generic():
        generic = _call(kind, x, axis, **kw)
    return fast, generic


def _dtypes(be: Backend) -> list[str]:
    names = [
        n for n in ("float16", "bfloat16", "float32", "float64") if n in be.float_dtypes
    ]
    return [*names, "int32"]


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("kind", KINDS)
def test_special_rows_every_dtype(be: Backend, kind: str, axis: int) -> None:
    rng = np.random.default_rng(1)
    for dtype in _dtypes(be):
        data = _inputs(dtype, rng)
        if axis == 0:
            data = np.ascontiguousarray(data.T)
        x = be.asarray(data, dtype=dtype)
        x_before = be.to_numpy(x)
        fast, generic = _both(kind, x, axis)
        out = dtype if not dtype.startswith("int") else be.dtype_name(be.default_float)
        _check_same(be, fast, generic, out)
        np.testing.assert_array_equal(be.to_numpy(x), x_before)


@pytest.mark.parametrize("axis", [(0, 2), (1,), None, (), 1, (0, 1, 2)])
@pytest.mark.parametrize("kind", KINDS)
def test_axes(be: Backend, kind: str, axis: Any) -> None:
    rng = np.random.default_rng(2)
    data = _inputs("float64", rng, width=12).reshape(3, 4, 12)
    data = np.concatenate([data, data[:, :, ::-1]], axis=2)  # 3 x 4 x 24
    for dtype in ("float32", "float64"):
        x = be.asarray(data, dtype=dtype)
        fast, generic = _both(kind, x, axis)
        _check_same(be, fast, generic, dtype)


def _options(
    be: Backend, name: str, shape: tuple[int, ...], rng: np.random.Generator
) -> dict[str, Any]:
    where = rng.random(shape) < 0.7
    where[2] = False  # a fully masked row
    where[0, 0] = False  # the NaN is masked away in row 0
    if name == "where":
        return {"where": be.asarray(where)}
    if name == "temperature":
        return {"temperature": 0.37}
    if name == "temperature-array":
        t = rng.uniform(0.2, 3.0, size=(shape[0], 1))
        return {"temperature": be.asarray(t, dtype="float64")}
    if name == "where+temperature":
        return {"where": be.asarray(where), "temperature": 2.5}
    raise AssertionError(name)


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize(
    "option", ["where", "temperature", "temperature-array", "where+temperature"]
)
@pytest.mark.parametrize("kind", FAMILY)
def test_masks_and_temperature(be: Backend, kind: str, option: str, axis: int) -> None:
    rng = np.random.default_rng(3)
    data = _inputs("float32", rng)
    opts = _options(be, option, data.shape, rng)
    for dtype in ("float32", "float64", "float16"):
        if dtype not in be.float_dtypes:
            continue
        d = data if dtype != "float16" else np.clip(data, -8.0, 8.0)
        x = be.asarray(d, dtype=dtype)
        fast, generic = _both(kind, x, axis, **opts)
        _check_same(be, fast, generic, dtype)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("weights", [None, "positive", "mixed"])
@pytest.mark.parametrize("axis", [-1, 0, None])
def test_logsumexp_options(
    be: Backend, axis: Any, weights: str | None, return_sign: bool, keepdims: bool
) -> None:
    rng = np.random.default_rng(4)
    data = _inputs("float64", rng)
    kw: dict[str, Any] = {"keepdims": keepdims, "return_sign": return_sign}
    if weights == "positive":
        kw["b"] = be.asarray(rng.uniform(0.1, 2.0, size=data.shape))
    elif weights == "mixed":
        b = rng.uniform(-1.0, 2.0, size=data.shape)
        b[:, 3] = 0.0
        kw["b"] = be.asarray(b)
    where = rng.random(data.shape) < 0.8
    where[2] = False
    for opts in ({}, {"where": be.asarray(where)}):
        x = be.asarray(data, dtype="float64")
        fast, generic = _both("logsumexp", x, axis, **kw, **opts)
        if return_sign:
            _check_same(be, fast[0], generic[0], "float64")
            _check_same(be, fast[1], generic[1], "float64")
        else:
            _check_same(be, fast, generic, "float64")


def test_path_of_follows_the_switch(be: Backend) -> None:
    xp = array_namespace(be.asarray([1.0, 2.0]))
    fast = "fast" if _fast.runner_for(xp) is not None else "generic"
    # SOFTMAX_XP_FORCE_GENERIC=1 may have set the process default
    default = "generic" if _fast.generic_forced() else fast
    assert _fast.path_of(xp) == default
    with sx.force_generic():
        assert _fast.path_of(xp) == "generic"
        with sx.force_generic(False):
            assert _fast.path_of(xp) == fast
        assert _fast.path_of(xp) == "generic"
    assert _fast.path_of(xp) == default


@needs("numpy")
def test_force_generic_is_per_thread() -> None:
    seen: dict[str, bool] = {}
    default = _fast.generic_forced()  # True under SOFTMAX_XP_FORCE_GENERIC=1

    def other() -> None:
        seen["other"] = _fast.generic_forced()

    with sx.force_generic():
        t = threading.Thread(target=other)
        t.start()
        t.join()
        seen["here"] = _fast.generic_forced()
    assert seen == {"other": default, "here": True}


@needs("numpy")
def test_force_generic_rejects_non_bool() -> None:
    with (
        pytest.raises(TypeError, match=r"force_generic: enabled=1"),
        sx.force_generic(1),
    ):  # type: ignore[arg-type]
        pass


@needs("numpy")
def test_environment_variable_forces_generic() -> None:
    code = (
        "import numpy, softmax_xp._fast as f, softmax_xp._compat as c;"
        "print(f.path_of(c.array_namespace(numpy.zeros(2))))"
    )
    env = {**os.environ, "SOFTMAX_XP_FORCE_GENERIC": "1"}
    src = str(
        Path(sx.__file__).resolve().parents[1]
    )  # wherever this run imports it from
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "generic"
