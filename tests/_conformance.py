"""Strategies, sources and the independent reference of the conformance suite.

A generated :class:`Case` is turned into Python *source text* for every array
it needs (``np.array([...], dtype='float32').reshape(...)`` wrapped in the
backend's constructor and a memory layout); the test evaluates exactly that
text, so the one-line reproducer printed on a failure builds the very same
arrays.

The reference follows docs/contract.md slice by slice, in mpmath, over float64 copies
of the inputs as the contract says the computation sees them: ``x`` cast to
the output dtype as IEEE rounds (``dtype=`` first, integers and bools to the
default float), widened to the compute dtype (float32 for half precision), and
divided by the temperature rounded to the compute dtype, that quotient rounded
once in the compute dtype. It never calls softmax_xp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

mpmath = pytest.importorskip("mpmath")
st = pytest.importorskip("hypothesis.strategies")
hnp = pytest.importorskip("hypothesis.extra.numpy")

import importlib.util
import itertools

from _reference import (
    DD,
    DPS,
    FORMATS,
    mp_reference,
    rel_error,
    rounded_shift,
    to_dd,
    ulp,
    ulp_error,
)

INF, NAN = math.inf, math.nan
HALF = ("float16", "bfloat16")
INTS = ("int32", "int64", "bool", "uint8")
FLOAT_RANK = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 3}
# the contract's bounds (docs/contract.md, "Accuracy")
HALF_ULPS = 1.0  # half precision: computed in float32, rounded once
SOFTMAX_REL_ULPS = 4.0  # float32/64 softmax, log_softmax: beyond fl(x - max)
LOGSUMEXP_ULPS = 2.0
CANCELLATION_ULPS = 2.0  # per magnification of log1p(s')'s error (test_accuracy)
STREAM_ULPS_PER_COMBINE = 2.0  # each combine rounds one exp and one add
# weights that every float dtype holds exactly, so that casting b is exact
B_VALUES = (0.0, -0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 0.25, 1.5)
# Python temperatures that are valid (normal, finite) in every compute dtype
T_ORDINARY = (1.0, 0.5, 2.0, 0.1, 3.0, 100.0, 1e-3, 0.7)
JAX_SHAPES = ((), (0,), (1,), (5,), (2, 3), (1, 4), (3, 1, 2), (2, 0, 3))

FUNCS = ("softmax", "log_softmax", "softmin", "logsumexp")


# --------------------------------------------------------------------------
# dtypes


def ml_bfloat16() -> Any:
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def np_dtype(name: str) -> Any:
    return ml_bfloat16() if name == "bfloat16" else np.dtype(name)


def finfo(name: str) -> Any:
    if name == "bfloat16":
        return pytest.importorskip("ml_dtypes").finfo(ml_bfloat16())
    return np.finfo(name)


def cast(a: Any, name: str) -> np.ndarray:
    """``a`` cast to ``name`` as IEEE rounds (NumPy / ml_dtypes casts)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(a).astype(np_dtype(name))


def compute_of(out: str) -> str:
    return "float32" if out in HALF else out


def tiny(name: str) -> float:
    return 2.0 ** FORMATS[name][1]


# --------------------------------------------------------------------------
# the case


@dataclass
class Case:
    """One generated call (values as NumPy arrays in their own dtypes)."""

    func: str
    x: np.ndarray  # in its source dtype (bfloat16: ml_dtypes)
    src: str  # x's dtype name
    axis: Any = "default"  # "default" leaves it out of the call
    where: Any = None  # None, a bool array, a Python bool or ("list", array)
    temperature: Any = None  # None, a Python float or an array
    b: Any = None  # None, a Python float or an array
    keepdims: bool = False
    return_sign: bool = False
    dtype: str | None = None
    layout: str = "C"  # see _LAYOUTS
    perm: tuple[int, ...] = ()  # for the "T" layout
    chunks: Any = None  # Dask: chunks of x
    default_float: str = "float64"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def out_dtype(self) -> str:
        if self.dtype is not None:
            return self.dtype
        xd = self.default_float if self.src in INTS else self.src
        if isinstance(self.b, np.ndarray):
            bd = self.default_float if self.b.dtype.name in INTS else dtype_name(self.b)
            xd = max(xd, bd, key=FLOAT_RANK.__getitem__)
        return xd


def dtype_name(a: np.ndarray) -> str:
    bf = ml_bfloat16_or_none()
    # not `a.dtype == None`: NumPy reads None as float64 there
    return "bfloat16" if bf is not None and a.dtype == bf else a.dtype.name


def ml_bfloat16_or_none() -> Any:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------------------
# strategies


def float_elements(draw: Any, name: str) -> Any:
    """An element strategy for ``name``: a palette of value kinds drawn per example."""
    fi = finfo(name)
    mx, tn = float(fi.max), float(fi.smallest_normal)
    sub = float(fi.smallest_subnormal)
    kinds = [st.floats(-10, 10), st.floats(-1000, 1000)]
    specials: list[float] = [0.0, -0.0, 1.0, -1.0]
    if draw(st.booleans()):
        specials += [-INF]
    if draw(st.booleans()):
        specials += [INF]
    if draw(st.booleans()):
        specials += [NAN]
    if draw(st.booleans()):  # huge
        kinds.append(st.floats(-mx, mx))
        specials += [mx, -mx, mx / 2, -mx / 3]
    if draw(st.booleans()):  # tiny and subnormal
        kinds.append(st.floats(-4 * tn, 4 * tn))
        specials += [tn, -tn, sub, -sub]
    kinds.append(st.sampled_from(specials))
    return st.one_of(*kinds)


@st.composite
def shapes(draw: Any, be: Any, max_elems: int = 64) -> tuple[int, ...]:
    if be.jax:  # JAX compiles per shape: a few shapes only
        return draw(st.sampled_from(JAX_SHAPES))
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.sampled_from((0, 1, 1, 2, 3, 4, 5))) for _ in range(ndim))
    while math.prod(shape) > max_elems:
        shape = shape[1:]
    return shape


@st.composite
def values(draw: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An array of ``shape`` in dtype ``name``, whole special slices included."""
    if name in INTS:
        dt = np.dtype(name)
        if name == "bool":
            return draw(hnp.arrays(dt, shape))
        info = np.iinfo(dt)
        lo, hi = int(info.min), int(info.max)
        if name == "int64":  # exact in float64: no double rounding by any cast
            lo, hi = -(2**53), 2**53
        elems = st.one_of(
            st.integers(max(lo, -100), min(hi, 100)), st.sampled_from((lo, hi))
        )
        return draw(hnp.arrays(dt, shape, elements=elems))
    a = draw(hnp.arrays(np.float64, shape, elements=float_elements(draw, name)))
    if a.ndim and a.size and draw(st.booleans()):
        # a whole special slice along some axis
        ax = draw(st.integers(0, a.ndim - 1))
        i = draw(st.integers(0, a.shape[ax] - 1))
        v = draw(st.sampled_from((-INF, INF, NAN)))
        idx = [slice(None)] * a.ndim
        idx[ax] = i
        a[tuple(idx)] = v
    return cast(a, name)


@st.composite
def axes(draw: Any, ndim: int, *, default_ok: bool) -> Any:
    options: list[Any] = [None, ()]
    if ndim:
        ints = st.integers(-ndim, ndim - 1)
        options += [
            draw(ints),
            draw(
                st.lists(
                    st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True
                ).map(
                    lambda ax: tuple(a - ndim if i % 2 else a for i, a in enumerate(ax))
                )
            ),
        ]
        if default_ok:
            options.append("default")
    return draw(st.sampled_from(options))


@st.composite
def fitting_shape(draw: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts to ``shape`` without enlarging it."""
    drop = draw(st.integers(0, len(shape)))
    return tuple(n if draw(st.booleans()) else 1 for n in shape[drop:])


@st.composite
def masks(draw: Any, shape: tuple[int, ...]) -> Any:
    kind = draw(
        st.sampled_from(("none", "none", "array", "array", "false", "py", "list"))
    )
    if kind == "none":
        return None
    if kind == "py":
        return draw(st.booleans())
    wshape = draw(fitting_shape(shape))
    if kind == "false":
        return np.zeros(wshape, dtype=bool)
    w = draw(hnp.arrays(np.bool_, wshape))
    # an empty list has no dtype (xp.asarray makes it float): lists hold values
    return ("list", w) if kind == "list" and w.ndim and w.size else w


@st.composite
def temperatures(draw: Any, be: Any, shape: tuple[int, ...], compute: str) -> Any:
    kind = draw(st.sampled_from(("none", "none", "py", "extreme", "array")))
    if kind == "none":
        return None
    fi = finfo(compute)
    if kind == "py":
        return draw(st.sampled_from(T_ORDINARY) | st.floats(1e-3, 1e3))
    if kind == "extreme":  # valid but extreme in the compute dtype
        mx, tn = float(fi.max), float(fi.smallest_normal)
        return draw(
            st.sampled_from((mx, tn, 2 * tn, mx / 2, 1e30, 1e-30)).filter(
                lambda t: tn <= t <= mx
            )
            | st.floats(tn, mx)
        )
    tdt = draw(st.sampled_from([*be.float_dtypes, "int32"]))
    if tdt == "int32":
        return draw(
            hnp.arrays(np.int32, draw(fitting_shape(shape)), elements=st.integers(1, 5))
        )
    tfi = finfo(tdt)
    lo = max(float(tfi.smallest_normal), float(fi.smallest_normal)) * 4
    hi = min(float(tfi.max), float(fi.max)) / 4
    elems = st.sampled_from((1.0, 0.5, 2.0)) | st.floats(max(lo, 1e-3), min(hi, 1e3))
    if draw(st.booleans()):
        elems = elems | st.floats(lo, hi)
    return cast(
        draw(hnp.arrays(np.float64, draw(fitting_shape(shape)), elements=elems)), tdt
    )


@st.composite
def weights(draw: Any, be: Any, shape: tuple[int, ...], src: str) -> Any:
    kind = draw(st.sampled_from(("none", "none", "py", "array", "array", "wide")))
    if kind == "none":
        return None
    if kind == "py":
        return draw(st.sampled_from(B_VALUES))
    bshape = draw(fitting_shape(shape))
    if kind == "wide" and not be.jax:  # b enlarges the joint shape
        bshape = (2, *shape) if math.prod(shape) <= 32 else bshape
    default = be.dtype_name(be.default_float)
    base = default if src in INTS else src
    choices = [base, *(d for d in ("float32", "float64") if d in be.float_dtypes)]
    if base in HALF:
        choices = [c for c in choices if c not in HALF or c == base]
    bdt = draw(st.sampled_from(choices))
    b = draw(hnp.arrays(np.float64, bshape, elements=st.sampled_from(B_VALUES)))
    return cast(b, bdt)


def source_dtypes(be: Any) -> list[str]:
    return [*be.float_dtypes, *INTS]


@st.composite
def cases(draw: Any, be: Any, funcs: tuple[str, ...] = FUNCS) -> Case:
    func = draw(st.sampled_from(funcs))
    src = draw(st.sampled_from(source_dtypes(be)))
    shape = draw(shapes(be))
    default = be.dtype_name(be.default_float)
    dtype = draw(st.none() | st.none() | st.sampled_from(list(be.float_dtypes)))
    case = Case(func=func, x=draw(values(shape, src)), src=src, dtype=dtype)
    case.default_float = default
    lse = func == "logsumexp"
    joint = shape
    if lse:
        case.b = draw(weights(be, shape, src))
        if isinstance(case.b, np.ndarray):
            joint = np.broadcast_shapes(shape, case.b.shape)
        case.keepdims = draw(st.booleans())
        case.return_sign = draw(st.booleans())
    case.axis = draw(axes(len(joint), default_ok=not lse and len(joint) > 0))
    if lse and len(joint) == 0 and case.axis == "default":
        case.axis = None
    case.where = draw(masks(joint))
    if not lse:
        case.temperature = draw(temperatures(be, shape, compute_of(case.out_dtype)))
    layouts = ["C"]
    if be.name == "numpy":
        layouts += ["F", "T", "neg", "step"]
    elif be.name.startswith("torch"):
        layouts += ["F", "step"]
    case.layout = draw(st.sampled_from(layouts))
    if case.layout == "T":
        case.perm = tuple(draw(st.permutations(range(len(shape)))))
    if be.lazy:
        case.chunks = tuple(draw(chunking(n)) for n in shape)
    return case


@st.composite
def chunking(draw: Any, n: int) -> tuple[int, ...]:
    if n == 0:
        return (0,)
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
    bounds = [0, *cuts, n]
    return tuple(b - a for a, b in itertools.pairwise(bounds))


# --------------------------------------------------------------------------
# sources: the text that builds each array (evaluated by the test as printed)


def _np_src(a: np.ndarray) -> str:
    name = dtype_name(a)
    shape = tuple(a.shape)
    if name == "bfloat16":
        vals = a.astype(np.float32).tolist()
        return f"np.array({vals!r}, dtype='float32').reshape({shape!r}).astype(ml_dtypes.bfloat16)"
    return f"np.array({a.tolist()!r}, dtype='{name}').reshape({shape!r})"


def _np_layout(src: str, case: Case, name: str) -> str:
    lay = case.layout if case.x.ndim else "C"  # 0-d: flips and transposes give scalars
    if lay == "F":
        return f"np.array({src}, order='F')"
    if lay == "T":
        p = case.perm
        inv = tuple(int(i) for i in np.argsort(p))
        return f"np.ascontiguousarray(({src}).transpose({p!r})).transpose({inv!r})"
    if lay == "neg":
        return f"np.flip(np.flip({src}).copy())"
    if lay == "step":  # every other element, garbage between
        fill = "nan" if name not in INTS else "1"
        return f"(lambda a: np.stack([a, np.full_like(a, {fill})], axis=-1)[..., 0])({src})"
    return src


def _torch_layout(src: str, case: Case, name: str) -> str:
    lay = case.layout if case.x.ndim else "C"
    if lay == "F":
        return (
            f"(lambda t: t.permute(*range(t.ndim)[::-1]).contiguous()"
            f".permute(*range(t.ndim)[::-1]))({src})"
        )
    if lay == "step":
        fill = "nan" if name not in INTS else "1"
        return f"(lambda t: torch.stack([t, torch.full_like(t, {fill})], -1)[..., 0])({src})"
    return src


def array_src(
    be: Any, a: np.ndarray, case: Case | None = None, *, main: bool = False
) -> str:
    """Source text of a backend array holding ``a`` (the main input gets the layout)."""
    name = dtype_name(a)
    src = _np_src(a)
    if be.name == "numpy":
        return _np_layout(src, case, name) if main and case else src
    if be.name.startswith("torch"):
        if name == "bfloat16":
            src = _np_src(a.astype(np.float32))
            t = f"torch.asarray({src}).to(torch.bfloat16)"
        else:
            t = f"torch.asarray({src})"
        if be.device is not None:
            t = f"{t}.to({str(be.device)!r})"
        return _torch_layout(t, case, name) if main and case else t
    if be.jax:
        return f"jnp.asarray({src})"
    if be.name == "dask":
        chunks = case.chunks if main and case and case.chunks is not None else -1
        return f"da.from_array({src}, chunks={chunks!r})"
    if be.name.startswith("array_api_strict"):
        dev = ", device=xs.Device('device1')" if be.device is not None else ""
        return f"xs.asarray({src}{dev})"
    msg = f"no source for backend {be.name}"
    raise ValueError(msg)


def dtype_src(be: Any, name: str) -> str:
    if be.name in ("numpy", "dask"):
        return (
            "np.dtype(ml_dtypes.bfloat16)"
            if name == "bfloat16"
            else f"np.dtype({name!r})"
        )
    if be.name.startswith("torch"):
        return f"torch.{name}"
    if be.jax:
        return f"jnp.{name}"
    return f"xs.{name}"


def imports(be: Any) -> str:
    mods = ["numpy as np", "softmax_xp as sx"]
    if be.name.startswith("torch"):
        mods.append("torch")
    elif be.jax:
        mods += ["jax", "jax.numpy as jnp"]
    elif be.name == "dask":
        mods.append("dask.array as da")
    elif be.name.startswith("array_api_strict"):
        mods.append("array_api_strict as xs")
    pre = ""
    if be.jax:
        pre = "jax.config.update('jax_enable_x64', True); "
    # bfloat16 cases exist only where ml_dtypes does (tests-minimal has none)
    ml = "import ml_dtypes; " if importlib.util.find_spec("ml_dtypes") else ""
    return f"import {', '.join(mods)}; {ml}{pre}inf = float('inf'); nan = float('nan')"


def kwargs_src(be: Any, case: Case) -> tuple[dict[str, str], dict[str, str]]:
    """(Python-valued keyword sources, array-valued keyword sources)."""
    py: dict[str, str] = {}
    arr: dict[str, str] = {}
    if case.axis != "default":
        py["axis"] = repr(case.axis)
    w = case.where
    if isinstance(w, bool):
        py["where"] = repr(w)
    elif isinstance(w, tuple):
        py["where"] = repr(w[1].tolist())
    elif w is not None:
        arr["where"] = array_src(be, w)
    for name in ("temperature", "b"):
        v = getattr(case, name)
        if isinstance(v, float):
            py[name] = repr(v)
        elif v is not None:
            arr[name] = array_src(be, v)
    if case.keepdims:
        py["keepdims"] = "True"
    if case.return_sign:
        py["return_sign"] = "True"
    if case.dtype is not None:
        py["dtype"] = dtype_src(be, case.dtype)
    return py, arr


def call_src(be: Any, case: Case, path: str) -> str:
    """The one-line reproducer of ``case`` on ``path`` (fast, generic, jit)."""
    py, arr = kwargs_src(be, case)
    xs_ = array_src(be, case.x, case, main=True)
    head = imports(be) + "; "
    if path == "generic":
        head += "sx.force_generic().__enter__(); "
    if path == "jit":
        names = list(arr)
        kw = ", ".join(
            [*(f"{k}={v}" for k, v in py.items()), *(f"{k}={k}" for k in names)]
        )
        params = ", ".join(["x", *names])
        args = ", ".join([xs_, *arr.values()])
        body = f"jax.jit(lambda {params}: sx.{case.func}(x, {kw}))({args})"
    else:
        kw = ", ".join(f"{k}={v}" for k, v in {**py, **arr}.items())
        body = f"sx.{case.func}({xs_}{', ' if kw else ''}{kw})"
    return f"{head}print({body})"


def namespace(be: Any) -> dict[str, Any]:
    import softmax_xp as sx

    ns: dict[str, Any] = {"np": np, "sx": sx, "inf": INF, "nan": NAN}
    try:
        import ml_dtypes

        ns["ml_dtypes"] = ml_dtypes
    except ImportError:
        pass
    if be.name.startswith("torch"):
        import torch

        ns["torch"] = torch
    elif be.jax:
        import jax
        import jax.numpy as jnp

        ns["jax"], ns["jnp"] = jax, jnp
    elif be.name == "dask":
        import dask.array as da

        ns["da"] = da
    elif be.name.startswith("array_api_strict"):
        import array_api_strict as xs

        ns["xs"] = xs
    return ns


def build(be: Any, case: Case) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(x, Python-valued kwargs, array-valued kwargs), evaluated from the sources."""
    ns = namespace(be)
    py, arr = kwargs_src(be, case)
    x = eval(array_src(be, case.x, case, main=True), ns)
    return (
        x,
        {k: eval(v, ns) for k, v in py.items()},
        {k: eval(v, ns) for k, v in arr.items()},
    )


# --------------------------------------------------------------------------
# the reference


@dataclass
class Expected:
    """Exact results of a case and the bound each element is held to."""

    dtype: str  # output dtype name
    compute: str
    value: DD  # per output element
    bound: np.ndarray  # in the metric's units
    metric: str  # "ulp" or "rel"
    sign: np.ndarray | None = None  # exact signs (logsumexp, return_sign)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.hi.shape)


def _axes_of(axis: Any, ndim: int, func: str) -> tuple[int, ...]:
    if axis == "default":
        axis = None if func == "logsumexp" else -1
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in items))


def _rows(
    a: np.ndarray, axes_: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    rest = [i for i in range(a.ndim) if i not in axes_]
    perm = (*rest, *axes_)
    moved = np.transpose(a, perm)
    n = math.prod(a.shape[i] for i in axes_)
    return (
        moved.reshape(math.prod(moved.shape[: a.ndim - len(axes_)]), n),
        perm,
        moved.shape,
    )


def _unrows(
    r: np.ndarray, perm: tuple[int, ...], moved_shape: tuple[int, ...]
) -> np.ndarray:
    return np.transpose(r.reshape(moved_shape), np.argsort(perm))


def inputs_as_computed(case: Case) -> tuple[np.ndarray, str, str]:
    """``x`` as the computation sees it (float64 copy of compute-dtype values)."""
    out = case.out_dtype
    comp = compute_of(out)
    # dtype= and integer promotion round here; logsumexp, a reduction, keeps
    # half outputs' inputs in float32 (the sign is that of the float32 total)
    first = comp if case.func == "logsumexp" and out in HALF else out
    x = cast(case.x, first).astype(np.float64)
    t = case.temperature
    if t is not None:
        c = np_dtype(comp)
        tc = (
            np.asarray(t).astype(np.float64).astype(c)
            if isinstance(t, float)
            else cast(t, comp)
        )
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            x = (x.astype(c) / tc).astype(
                np.float64
            )  # one rounding, in the compute dtype
    if case.func == "softmin":
        x = -x
    return x, out, comp


def mask_of(case: Case, shape: tuple[int, ...]) -> np.ndarray:
    w = case.where
    if w is None:
        return np.ones(shape, dtype=bool)
    if isinstance(w, tuple):
        w = w[1]
    return np.broadcast_to(np.asarray(w, dtype=bool), shape)


def reference(case: Case) -> Expected:
    x, out, comp = inputs_as_computed(case)
    if case.func == "logsumexp":
        return _ref_logsumexp(case, x, out, comp)
    keep = mask_of(case, x.shape)
    ax = _axes_of(case.axis, x.ndim, case.func)
    rows, perm, mshape = _rows(x, ax)
    krows = _rows(keep, ax)[0]
    field_ = "log_softmax" if case.func == "log_softmax" else "softmax"
    res = np.empty(rows.shape, dtype=object)
    for i in range(rows.shape[0]):
        row, k = rows[i], krows[i]
        kept = row[k]
        if kept.size and not np.isnan(kept).any() and not np.isposinf(kept).any():
            row = rounded_shift(row.astype(np_dtype(comp)), k)
        res[i] = getattr(mp_reference(row, k), field_)
    value = to_dd(_unrows(res, perm, mshape) if res.size else np.empty(x.shape, object))
    if out in HALF:
        bound, metric = HALF_ULPS, "ulp"
    else:
        bound, metric = SOFTMAX_REL_ULPS, "rel"
    return Expected(out, comp, value, np.full(x.shape, bound), metric)


def _lse_row(
    x: np.ndarray, b: np.ndarray | None, keep: np.ndarray, out: str, comp: str
) -> tuple[Any, Any, float]:
    """(exact lse, exact sign, extra allowance in ulp of ``out``) of one slice."""
    mpf = mpmath.mpf
    if b is not None:
        keep = keep & (b != 0)  # b == 0 is ignored like a masked entry
    xs, bs = x[keep], (None if b is None else b[keep])
    if np.isnan(xs).any():
        return mpf("nan"), mpf("nan"), 0.0
    pinf = np.isposinf(xs)
    if pinf.any():
        w = 1.0 if bs is None else float(mpmath.fsum(mpf(float(v)) for v in bs[pinf]))
        if w == 0:
            return mpf("nan"), mpf("nan"), 0.0
        return mpf("inf"), mpf(1 if w > 0 else -1), 0.0
    fin = np.isfinite(xs)
    if not fin.any():
        return mpf("-inf"), mpf(0), 0.0
    xs = xs[fin]
    bs = None if bs is None else bs[fin]
    m = float(xs.max())
    # wide enough that 1 + s' keeps every digit of s' (terms down to e^-745
    # next to 1): log(total) is then exact to DPS digits even when tiny
    with mpmath.workdps(DPS + 340):
        terms = [mpmath.exp(mpf(float(v)) - m) for v in xs]
        if bs is not None:
            terms = [t * mpf(float(c)) for t, c in zip(terms, bs, strict=True)]
        total = mpmath.fsum(terms)
        if total == 0:
            return mpf("-inf"), mpf(0), 0.0
        sign = mpmath.sign(total)
        log_total = mpmath.log(abs(total))  # of the sum relative to e^m
        lse = m + log_total
        allowance = 0.0
        u_out = float(ulp(to_dd(lse), out)) if mpmath.isfinite(lse) else 1.0
        if bs is None:
            # m + log1p(s') magnifies log1p(s')'s error when they nearly cancel
            r = float(ulp(to_dd(log_total), comp)) / u_out
            allowance = CANCELLATION_ULPS * max(r - 1.0, 0.0)
        else:
            # log(total): total carries (n + 2) eps relative error, times its
            # condition number sum|terms| / |total| (cancelling weights)
            cond = float(mpmath.fsum(abs(t) for t in terms) / abs(total))
            eps = 2.0 ** (1 - FORMATS[comp][0])
            if (len(terms) + 2) * eps * cond >= 1:
                # the weights cancel below the rounding of the terms: the
                # total may come out as anything of its size, 0 included
                return lse, sign, math.inf
            allowance = (len(terms) + 2) * eps * cond / u_out
            r = float(ulp(to_dd(log_total), comp)) / u_out
            allowance += CANCELLATION_ULPS * max(r - 1.0, 0.0)
    return lse, sign, allowance


def _ref_logsumexp(case: Case, x: np.ndarray, out: str, comp: str) -> Expected:
    b = case.b
    if isinstance(b, np.ndarray):
        bb = cast(b, out).astype(np.float64)  # exact: B_VALUES fit every dtype
        shape = np.broadcast_shapes(x.shape, bb.shape)
        x, bb = np.broadcast_to(x, shape), np.broadcast_to(bb, shape)
    elif b is not None:
        bb = np.full(x.shape, float(b))
    else:
        bb = None
    keep = mask_of(case, x.shape)
    ax = _axes_of(case.axis, x.ndim, "logsumexp")
    rows, _perm, mshape = _rows(x, ax)
    krows = _rows(np.ascontiguousarray(keep), ax)[0]
    brows = None if bb is None else _rows(np.ascontiguousarray(bb), ax)[0]
    lse = np.empty(rows.shape[0], dtype=object)
    sign = np.empty(rows.shape[0], dtype=object)
    allow = np.zeros(rows.shape[0])
    for i in range(rows.shape[0]):
        lse[i], sign[i], allow[i] = _lse_row(
            rows[i], None if brows is None else brows[i], krows[i], out, comp
        )
        if not case.return_sign and sign[i] < 0:
            lse[i] = mpmath.mpf("nan")  # SciPy: log of a negative sum
    rshape = tuple(mshape[: x.ndim - len(ax)])
    lse, sign, allow = lse.reshape(rshape), sign.reshape(rshape), allow.reshape(rshape)
    if case.keepdims:
        kshape = tuple(1 if i in ax else n for i, n in enumerate(x.shape))
        lse, sign, allow = (
            lse.reshape(kshape),
            sign.reshape(kshape),
            allow.reshape(kshape),
        )
    base = HALF_ULPS if out in HALF else LOGSUMEXP_ULPS
    signs = np.array([float(s) for s in sign.ravel()]).reshape(sign.shape)
    return Expected(out, comp, to_dd(lse), base + allow, "ulp", signs)


# --------------------------------------------------------------------------
# comparisons


def check_values(got: np.ndarray, exp: Expected, extra_bound: float = 0.0) -> None:
    """Special-value pattern and accuracy of ``got`` (float64 copy) against ``exp``."""
    hi, lo = exp.value
    assert got.shape == hi.shape, f"shape {got.shape}, expected {hi.shape}"
    rounded = cast(hi, exp.dtype).astype(np.float64)  # correctly rounded (up to ties)
    loose = np.broadcast_to(np.isinf(exp.bound), hi.shape)  # cancelling weights
    if loose.any():
        got = np.where(loose & ~np.isnan(got) & (got != INF), hi, got)
    for what, g, e in (
        ("NaN", np.isnan(got), np.isnan(hi)),
        ("+inf", got == INF, rounded == INF),
        ("-inf", got == -INF, rounded == -INF),
        (
            "exact 0",
            got[(hi == 0) & (lo == 0)] == 0,
            np.ones(int(((hi == 0) & (lo == 0)).sum()), bool),
        ),
    ):
        if not np.array_equal(g, e):
            bad = np.flatnonzero(g != e)[:4]
            msg = (
                f"{what} pattern differs at flat {bad.tolist()}: got {got.ravel()[bad] if what != 'exact 0' else got[(hi == 0) & (lo == 0)][bad]!r}, "
                f"exact {hi.ravel()[bad] if what != 'exact 0' else 0.0}"
            )
            raise AssertionError(msg)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = (
            ulp_error(got, exp.value, exp.dtype)
            if exp.metric == "ulp"
            else rel_error(got, exp.value, exp.dtype)
        )
        tn = tiny(exp.compute)
        small = np.abs(hi) < tn
        abs_err = np.abs((got - hi) - lo) / tn
    abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)
    bound = np.broadcast_to(exp.bound + extra_bound, hi.shape)
    err = np.where(small, abs_err, err)
    bound = np.where(small, 1.0, bound)
    special = np.isnan(hi) | np.isinf(rounded)
    err = np.where(special, 0.0, err)  # the patterns above decided those
    bad = ~(err <= bound)
    if bad.any():
        j = np.flatnonzero(bad.ravel())
        k = j[np.argmax((err - bound).ravel()[j])]
        msg = (
            f"{bad.sum()} of {bad.size} values out of bounds; worst at flat {k}: "
            f"got {got.ravel()[k]!r}, exact {hi.ravel()[k]!r} "
            f"({err.ravel()[k]:.3g} {exp.metric}-ulp of {exp.dtype} > {bound.ravel()[k]:.3g})"
        )
        raise AssertionError(msg)


def check_sign(got: np.ndarray, exp: Expected) -> None:
    assert exp.sign is not None
    assert got.shape == exp.sign.shape, (
        f"sign shape {got.shape}, expected {exp.sign.shape}"
    )
    loose = np.broadcast_to(np.isinf(exp.bound), got.shape)  # cancelling weights
    same = (got == exp.sign) | (np.isnan(got) & np.isnan(exp.sign))
    same |= loose & np.isin(got, (-1.0, 0.0, 1.0))
    if not same.all():
        k = np.flatnonzero(~same.ravel())[:4]
        msg = f"sign differs at flat {k.tolist()}: got {got.ravel()[k]!r}, exact {exp.sign.ravel()[k]!r}"
        raise AssertionError(msg)


def same_pattern(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """NaN, +-inf and zeros at the same places on two paths."""
    for name, fa, fb in (
        ("NaN", np.isnan(a), np.isnan(b)),
        ("+inf", a == INF, b == INF),
        ("-inf", a == -INF, b == -INF),
    ):
        if not np.array_equal(fa, fb):
            k = np.flatnonzero(fa != fb)[:4]
            msg = f"{name} pattern differs between {what}: {a.ravel()[k]!r} vs {b.ravel()[k]!r}"
            raise AssertionError(msg)
