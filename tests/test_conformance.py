"""Differential conformance: every path against an independent mpmath reference.

Hypothesis generates whole calls (shapes with size-0 and size-1 axes, every
dtype of the backend and integers, values mixing ordinary, huge, tiny,
subnormal, signed zeros, infinities and NaN, whole special slices, axes in
every spelling, masks of every broadcastable shape, temperatures, weights,
``dtype=``, memory layouts and Dask chunkings) and holds the fast path, the
generic core and (JAX) the call under ``jax.jit`` to the contract of docs/contract.md:
dtype, shape, namespace and device; the special-value pattern; the accuracy
bounds (tolerances derived from the dtype, see ``_conformance``); inputs left
unmodified and never aliased. A failure prints a one-line reproducer.

``SOFTMAX_XP_CONFORMANCE=deep`` selects the deep profile (30x the examples).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("mpmath")

import itertools

import _conformance as cf
from _helpers import fast_paths_on  # noqa: F401 - autouse: the fast path by default
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import softmax_xp as sx

_COMMON: dict[str, Any] = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
}
# CI's quick profile draws the same examples in every run, so that a red run is
# the code's doing; the deep profile draws new ones each time, to explore
settings.register_profile(
    "softmax-xp-conformance-quick", max_examples=40, derandomize=True, **_COMMON
)
settings.register_profile(
    "softmax-xp-conformance-deep", max_examples=1200, derandomize=False, **_COMMON
)
PROFILE = (
    "softmax-xp-conformance-deep"
    if os.environ.get("SOFTMAX_XP_CONFORMANCE", "").strip().lower() == "deep"
    else "softmax-xp-conformance-quick"
)


def _settings(be: Any, weight: float = 1.0) -> Any:
    """The profile's example count, scaled for backends that are slow per call."""
    base = settings.get_profile(PROFILE)
    # JAX compiles per shape and dtype; Dask builds a graph per call
    factor = 0.25 if be.jax else 0.4 if be.lazy else 1.0
    n = max(2, round(base.max_examples * factor * weight))
    return settings(base, max_examples=n)


def _paths(be: Any) -> tuple[str, ...]:
    return ("fast", "generic", "jit") if be.jax else ("fast", "generic")


def _call(case: cf.Case, path: str, fn: Any, x: Any, py: dict, arr: dict) -> Any:
    if path == "fast":
        return fn(x, **py, **arr)
    if path == "generic":
        with sx.force_generic():
            return fn(x, **py, **arr)
    import jax

    names = list(arr)

    def jitted(x: Any, *a: Any) -> Any:  # a fresh function: traced anew
        return fn(x, **py, **dict(zip(names, a, strict=True)))

    return jax.jit(jitted)(x, *arr.values())


def _snapshot(be: Any, a: Any) -> bytes:
    return be.to_numpy(a).tobytes()


def _storage(be: Any, a: Any) -> Any:
    if be.name.startswith("torch"):
        return a.untyped_storage().data_ptr()
    return None


def _check_array(be: Any, out: Any, x: Any, inputs: list[Any], dtype: str) -> None:
    import array_api_compat

    assert type(out) is type(x), f"type {type(out).__name__}, x is {type(x).__name__}"
    want = be.dtype(dtype)
    assert out.dtype == want, f"dtype {out.dtype}, expected {want}"
    assert array_api_compat.device(out) == array_api_compat.device(x), "device"
    if be.name == "numpy":
        for a in inputs:
            if isinstance(a, np.ndarray):
                assert not np.shares_memory(out, a), "output aliases an input"
    if be.name.startswith("torch"):
        ptrs = {_storage(be, a) for a in inputs if hasattr(a, "untyped_storage")}
        if out.numel():
            assert _storage(be, out) not in ptrs, "output aliases an input"


def _run_case(be: Any, case: cf.Case) -> None:
    expected = cf.reference(case)
    fn = getattr(sx, case.func)
    results: dict[str, list[np.ndarray]] = {}
    for path in _paths(be):
        line = cf.call_src(be, case, path)
        x, py, arr = cf.build(be, case)
        inputs = [x, *arr.values()]
        before = [_snapshot(be, a) for a in inputs]
        try:
            out = _call(case, path, fn, x, py, arr)
            outs = out if isinstance(out, tuple) else (out,)
            assert len(outs) == (2 if case.return_sign else 1), "number of outputs"
            for o in outs:
                _check_array(be, o, x, inputs, expected.dtype)
            got = [be.to_numpy(o).astype(np.float64) for o in outs]
            for a, snap in zip(inputs, before, strict=True):
                assert _snapshot(be, a) == snap, "an input was modified"
            cf.check_values(got[0], expected)
            if case.return_sign:
                cf.check_sign(got[1], expected)
            for other, prev in results.items():
                for g, p in zip(got, prev, strict=True):
                    cf.same_pattern(g, p, f"{path} and {other}")
        except Exception as err:
            msg = f"{case.func} on {be.name}, {path} path: {err}\nreproducer:\n{line}"
            raise AssertionError(msg) from err
        results[path] = got


def test_conformance(be: Any) -> None:
    @_settings(be)
    @given(case=cf.cases(be))
    def check(case: cf.Case) -> None:
        note(cf.call_src(be, case, "fast"))
        _run_case(be, case)

    check()


# --------------------------------------------------------------------------
# Python temperatures that do not survive rounding to the compute dtype


def _bad_temperatures(compute: str) -> Any:
    fi = cf.finfo(compute)
    tn, mx = float(fi.smallest_normal), float(fi.max)
    under = st.floats(5e-324, tn, exclude_max=True)
    edges = [tn, float(np.nextafter(tn, 0)), 5e-324, mx]
    if compute == "float32":
        over_edge = 3.4028235677973366e38  # max + half an ulp: rounds to inf
        edges += [over_edge, float(np.nextafter(over_edge, 0)), 1e39, 1e300]
        return st.one_of(under, st.floats(3.3e38, 1.7e308), st.sampled_from(edges))
    return st.one_of(under, st.sampled_from(edges))


def test_python_temperature_range(be: Any) -> None:
    funcs = ("softmax", "log_softmax", "softmin")

    @st.composite
    def draw_case(draw: Any) -> tuple[str, str, str | None, float]:
        func = draw(st.sampled_from(funcs))
        src = draw(st.sampled_from([*be.float_dtypes, "int32"]))
        dtype = draw(st.none() | st.sampled_from(list(be.float_dtypes)))
        out = dtype or (be.dtype_name(be.default_float) if src == "int32" else src)
        return func, src, dtype, draw(_bad_temperatures(cf.compute_of(out)))

    @_settings(be, 0.5)
    @given(c=draw_case())
    def check(c: tuple[str, str, str | None, float]) -> None:
        func, src, dtype, t = c
        case = cf.Case(
            func=func,
            x=cf.cast(np.array([1.0, 2.0, -1.0]), src),
            src=src,
            temperature=t,
            dtype=dtype,
            default_float=be.dtype_name(be.default_float),
        )
        comp = cf.compute_of(case.out_dtype)
        with np.errstate(over="ignore"):
            rounded = float(np.float64(t).astype(cf.np_dtype(comp)))
        valid = math.isfinite(rounded) and rounded >= cf.tiny(comp)
        line = cf.call_src(be, case, "fast")
        note(line)
        x, py, arr = cf.build(be, case)
        try:
            out = getattr(sx, func)(x, **py, **arr)
        except ValueError as err:
            text = str(err)
            assert not valid, f"valid temperature {t!r} refused: {text}\n{line}"
            assert func in text, f"function not named: {text!r}\n{line}"
            assert "temperature" in text, f"parameter not named: {text!r}\n{line}"
            assert repr(t) in text or str(t) in text, (
                f"value not named: {text!r}\n{line}"
            )
            assert comp in text, f"compute dtype {comp} not named: {text!r}\n{line}"
            return
        assert valid, (
            f"{func}: temperature={t!r} rounds to {rounded!r} in {comp}, expected a "
            f"ValueError, got {be.to_numpy(out)!r}\nreproducer:\n{line}"
        )
        got = be.to_numpy(out).astype(np.float64)
        cf.check_values(got, cf.reference(case))

    check()


# --------------------------------------------------------------------------
# gradients (torch, JAX)


@st.composite
def _grad_cases(draw: Any, be: Any) -> tuple[cf.Case, np.ndarray, bool]:
    func = draw(st.sampled_from(cf.FUNCS))
    dtype = draw(st.sampled_from(("float64", "float64", "float32")))
    shape = draw(cf.shapes(be).filter(lambda s: len(s) > 0))
    ordinary = draw(st.booleans())
    elems = st.floats(-10, 10)
    if not ordinary:
        elems = elems | st.sampled_from((-math.inf, math.inf, 1e300, -1e300))
    from hypothesis.extra import numpy as hnp

    x = draw(hnp.arrays(np.float64, shape, elements=elems))
    case = cf.Case(func=func, x=x, src="float64", default_float="float64")
    if dtype != "float64":
        case.x = cf.cast(x, dtype)
        case.src = dtype
    lse = func == "logsumexp"
    case.axis = draw(cf.axes(len(shape), default_ok=not lse))
    w = draw(st.none() | hnp.arrays(np.bool_, draw(cf.fitting_shape(shape))))
    case.where = w
    if w is not None:
        # masked entries hold garbage that must not reach any gradient
        keep = np.broadcast_to(w, shape)
        garbage = draw(
            hnp.arrays(
                np.float64,
                shape,
                elements=st.sampled_from((math.nan, math.inf, -math.inf, 1e300)),
            )
        )
        case.x = cf.cast(np.where(keep, case.x.astype(np.float64), garbage), case.src)
    if lse:
        if draw(st.booleans()):
            case.b = cf.cast(
                draw(
                    hnp.arrays(
                        np.float64,
                        draw(cf.fitting_shape(shape)),
                        elements=st.sampled_from((0.0, 0.5, 1.0, 2.0)),
                    )
                ),
                case.src,
            )
        case.keepdims = draw(st.booleans())
    elif draw(st.booleans()):
        case.temperature = draw(st.sampled_from(cf.T_ORDINARY))
    out_shape = cf.reference(case).shape
    ct = draw(hnp.arrays(np.float64, out_shape, elements=st.floats(-2, 2)))
    wild = draw(st.booleans())  # any cotangent on masked outputs
    if wild and w is not None and not lse:
        keep = np.broadcast_to(w, shape)
        ct = np.where(
            keep, ct, draw(st.sampled_from((1e300, math.inf, math.nan, -7.0)))
        )
    return case, ct, ordinary


def _grad(
    be: Any, case: cf.Case, ct: np.ndarray, generic: bool
) -> tuple[np.ndarray, np.ndarray]:
    x, py, arr = cf.build(be, case)
    fn = getattr(sx, case.func)
    if be.jax:
        import jax

        def f(x: Any) -> Any:
            return fn(x, **py, **arr)

        def pull(y: Any, vjp: Any) -> Any:
            # a huge float64 cotangent (1e300) rounds to inf in a float32
            # output, as IEEE casting does, without NumPy's overflow warning
            with np.errstate(over="ignore"):
                ct_y = np.asarray(ct).astype(np.dtype(y.dtype))
            return vjp(jax.numpy.asarray(ct_y))

        if generic:
            with sx.force_generic():
                y, vjp = jax.vjp(f, x)
                (g,) = pull(y, vjp)
        else:
            y, vjp = jax.vjp(f, x)
            (g,) = pull(y, vjp)
        return be.to_numpy(y).astype(np.float64), be.to_numpy(g).astype(np.float64)
    import torch

    xt = x.detach().clone().requires_grad_(True)
    if generic:
        with sx.force_generic():
            y = fn(xt, **py, **arr)
    else:
        y = fn(xt, **py, **arr)
    y.backward(torch.asarray(ct, dtype=y.dtype))
    return be.to_numpy(y).astype(np.float64), be.to_numpy(xt.grad).astype(np.float64)


def _loss(
    be: Any, case: cf.Case, x64: np.ndarray, ct: np.ndarray, keep_out: np.ndarray
) -> float:
    c = cf.Case(**{**case.__dict__, "x": x64})
    x, py, arr = cf.build(be, c)
    y = be.to_numpy(getattr(sx, case.func)(x, **py, **arr)).astype(np.float64)
    # outputs outside keep_out (inf) are zeroed before the product, not after
    return float(np.sum(np.where(keep_out, ct, 0.0) * np.where(keep_out, y, 0.0)))


def _grad_src(be: Any, case: cf.Case, ct: np.ndarray, path: str) -> str:
    """A one-line reproducer printing the gradient of ``case`` for cotangent ``ct``."""
    py, arr = cf.kwargs_src(be, case)
    kw = "".join(f", {k}={v}" for k, v in {**py, **arr}.items())
    x = cf.array_src(be, case.x, case, main=True)
    head = cf.imports(be) + "; "
    if path == "generic":
        head += "sx.force_generic().__enter__(); "
    ct_src = f"np.array({ct.tolist()!r}).reshape({ct.shape!r})"
    if be.jax:
        return (
            f"{head}y, f = jax.vjp(lambda x: sx.{case.func}(x{kw}), {x}); "
            f"print(f(jnp.asarray({ct_src}, dtype=y.dtype)))"
        )
    return (
        f"{head}x = {x}.requires_grad_(); y = sx.{case.func}(x{kw}); "
        f"y.backward(torch.asarray({ct_src}, dtype=y.dtype)); print(x.grad)"
    )


def _check_gradient(be: Any, case: cf.Case, ct: np.ndarray, ordinary: bool) -> None:
    line = "\n".join(_grad_src(be, case, ct, p) for p in ("fast", "generic"))
    note(line)
    try:
        y, g = _grad(be, case, ct, generic=False)
        _yg, gg = _grad(be, case, ct, generic=True)
        keep = cf.mask_of(case, case.x.shape)
        finite_in = np.isfinite(case.x.astype(np.float64))
        assert np.isfinite(g).all(), f"fast gradient not finite: {g.tolist()}"
        assert np.isfinite(gg).all(), f"generic gradient not finite: {gg.tolist()}"
        assert (g[~keep] == 0).all(), f"fast gradient at masked entries: {g[~keep]}"
        assert (gg[~keep] == 0).all(), (
            f"generic gradient at masked entries: {gg[~keep]}"
        )
        eps = 2.0 ** (1 - cf.FORMATS[case.src][0])
        scale = 1.0 + float(np.abs(ct[np.isfinite(ct)]).sum()) if ct.size else 1.0
        np.testing.assert_allclose(
            g,
            gg,
            rtol=64 * eps,
            atol=64 * eps * scale,
            err_msg="fast vs generic gradient",
        )
        if ordinary and case.src == "float64" and (finite_in | ~keep).all():
            keep_out = np.isfinite(y) & np.isfinite(ct)
            if case.func != "logsumexp" and case.where is not None:
                keep_out &= np.broadcast_to(np.asarray(case.where), y.shape)
            x64 = case.x.astype(np.float64)
            for i in zip(*np.nonzero(keep & finite_in), strict=True):

                def central(h: float, i: tuple[Any, ...] = i) -> float:
                    xp_, xm = x64.copy(), x64.copy()
                    xp_[i] += h
                    xm[i] -= h
                    return (
                        _loss(be, case, xp_, ct, keep_out)
                        - _loss(be, case, xm, ct, keep_out)
                    ) / (2 * h)

                # Richardson: the h^2 term of two central differences cancels,
                # so steep slices (small temperatures) stay within tolerance
                h = 1e-6 * max(1.0, abs(x64[i]))
                fd = (4 * central(h / 2) - central(h)) / 3
                assert abs(fd - g[i]) <= 1e-5 * scale, (
                    f"gradient at {i}: {g[i]!r}, central difference {fd!r}"
                )
    except Exception as err:
        msg = f"gradient of {case.func} on {be.name}: {err}\nreproducer:\n{line}"
        raise AssertionError(msg) from err


def test_gradients(be: Any) -> None:
    if not (be.jax or be.name.startswith("torch")):
        pytest.skip("gradients: torch and JAX only")

    @_settings(be, 0.5)
    @given(c=_grad_cases(be))
    def check(c: tuple[cf.Case, np.ndarray, bool]) -> None:
        _check_gradient(be, *c)

    check()


# --------------------------------------------------------------------------
# the streaming normaliser over random splits


@st.composite
def _stream_cases(draw: Any, be: Any) -> tuple[cf.Case, int, list[int], list[int]]:
    src = draw(st.sampled_from(cf.source_dtypes(be)))
    shape = draw(cf.shapes(be).filter(lambda s: len(s) > 0))
    case = cf.Case(func="logsumexp", x=draw(cf.values(shape, src)), src=src)
    case.default_float = be.dtype_name(be.default_float)
    case.axis = draw(cf.axes(len(shape), default_ok=False).filter(lambda a: a != ()))
    red = cf._axes_of(case.axis, len(shape), "logsumexp")
    split = draw(st.sampled_from(red))
    n = shape[split]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    order = draw(st.permutations(range(len(cuts) + 1)))
    w = draw(st.none() | st.just("array"))
    if w is not None:
        from hypothesis.extra import numpy as hnp

        case.where = draw(hnp.arrays(np.bool_, shape))
    case.keepdims = True
    return case, split, cuts, list(order)


def _stream_src(
    be: Any, case: cf.Case, split: int, cuts: list[int], order: list[int]
) -> str:
    bounds = [0, *cuts, case.x.shape[split]]
    pieces = []
    for a, b in itertools.pairwise(bounds):
        idx = [slice(None)] * case.x.ndim
        idx[split] = slice(a, b)
        xc = case.x[tuple(idx)]
        wc = None if case.where is None else case.where[tuple(idx)]
        sub = cf.Case(func="logsumexp", x=xc, src=case.src, layout="C")
        sub.chunks = None  # one block per piece: the split is the chunking
        pieces.append(
            (
                cf.array_src(be, xc, sub, main=True),
                "None" if wc is None else cf.array_src(be, wc),
            )
        )
    chunks = "[" + ", ".join(p[0] for p in pieces) + "]"
    masks = "[" + ", ".join(p[1] for p in pieces) + "]"
    fin = ""
    if case.out_dtype in cf.HALF:
        fin = f", dtype={cf.dtype_src(be, case.out_dtype)}"
    return (
        f"{cf.imports(be)}; cs = {chunks}; ws = {masks}; "
        f"s = sx.logsumexp_combine(*[sx.logsumexp_state(cs[i], axis={case.axis!r}, where=ws[i], keepdims=True) for i in {order!r}]); "
        f"print(sx.logsumexp_finish(s{fin}), [sx.softmax_from_state(c, s, where=w) for c, w in zip(cs, ws)], "
        f"[sx.log_softmax_from_state(c, s, where=w) for c, w in zip(cs, ws)])"
    )


def _check_streaming(
    be: Any, case: cf.Case, split: int, cuts: list[int], order: list[int]
) -> None:
    line = _stream_src(be, case, split, cuts, order)
    note(line)
    ns = cf.namespace(be)
    try:
        exec(line.replace("print(", "result = (", 1), ns)  # noqa: S102 - our own text
        lse, sms, lsms = ns["result"]
        k = len(order)
        lse_exp = cf.reference(case)
        _check_array(be, lse, ns["cs"][0], list(ns["cs"]), lse_exp.dtype)
        extra = cf.STREAM_ULPS_PER_COMBINE * (k - 1)
        cf.check_values(be.to_numpy(lse).astype(np.float64), lse_exp, extra)
        x1, py, arr = cf.build(be, case)
        one_shot = be.to_numpy(sx.logsumexp(x1, **py, **arr)).astype(np.float64)
        cf.same_pattern(
            be.to_numpy(lse).astype(np.float64),
            one_shot,
            "streaming and one-shot logsumexp",
        )
        for func, outs in (("softmax", sms), ("log_softmax", lsms)):
            ref = cf.reference(
                cf.Case(**{**case.__dict__, "func": func, "keepdims": False})
            )
            for o, cx in zip(outs, ns["cs"], strict=True):
                _check_array(be, o, cx, [cx], ref.dtype)
            got = np.concatenate(
                [be.to_numpy(o).astype(np.float64) for o in outs], axis=split
            )
            half = ref.dtype in cf.HALF
            cf.check_values(got, ref, 0.0 if half else extra)
    except Exception as err:
        msg = f"streaming on {be.name}: {err}\nreproducer:\n{line}"
        raise AssertionError(msg) from err


def test_streaming(be: Any) -> None:
    @_settings(be, 0.5)
    @given(c=_stream_cases(be))
    def check(c: tuple[cf.Case, int, list[int], list[int]]) -> None:
        _check_streaming(be, *c)

    check()
