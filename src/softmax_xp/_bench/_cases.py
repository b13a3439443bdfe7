"""What is timed: the input layouts, and per backend the floors, peers and ours.

A *group* is one input (layout and dtype); every backend gets the same values,
converted once (zero-copy for torch CPU tensors and Dask). A *candidate* is one
implementation of one kind on one backend: ``role`` says whether it is ours, a
peer (the library's own function), a floor (``exp`` with ``out=``, a copy) or
a variant of ours (under ``jax.jit``; the generic path).

Every backend is optional: :meth:`Backend.probe` names the reason one cannot
run (library not importable, no GPU) and the suite records it as skipped.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._backends import matrix, targets
from ._timing import Timing

__all__ = [
    "BACKENDS",
    "FULL_LAYOUTS",
    "GPU_LAYOUTS",
    "GPU_QUICK_LAYOUTS",
    "KINDS",
    "QUICK_LAYOUTS",
    "Backend",
    "Candidate",
    "Layout",
    "Skip",
    "make_backends",
    "parse_layouts",
]

KINDS = ("softmax", "log_softmax", "logsumexp")
# forward and backward of the small-call rows: the kind's name with this suffix
GRAD = " fwd+bwd"
GRAD_KINDS = ("softmax", "log_softmax")
MLP_KIND = "mlp step"
# the cases where the cost of one call is what is measured: forward and
# forward+backward on torch and JAX, serial on NumPy (no one-thread row)
SMALL_CALL = frozenset({"tiny", "small"})


@dataclass(frozen=True)
class Layout:
    """An input shape and the axis the functions work along.

    A named layout (``name``) is a case of its own rather than a shape: the
    training-loop row, whose input is the MLP's data set. ``dtypes``, when
    set, are the only dtypes it runs in.
    """

    shape: tuple[int, ...]
    axis: int = -1
    role: str | None = None  # the case of the performance targets it stands for
    name: str | None = None
    about: str | None = None  # printed in the group's header instead of the size
    dtypes: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        if self.name is not None:
            return self.name
        dims = "x".join(str(n) for n in self.shape)
        return dims if self.axis in (-1, len(self.shape) - 1) else f"{dims}:{self.axis}"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


# The training-loop row: a 2-layer MLP (32-64-10) trained by SGD on batches of
# 128; the suite's input for it is the data set (MLP_BATCHES batches in a row),
# labels and initial weights come from FIXED_SEED, so every candidate starts from
# the same weights and sees the same batches in the same order.
MLP_SIZES = (32, 64, 10)
MLP_BATCH = 128
MLP_BATCHES = 8
MLP_LR = 0.01
# the seed of what is not the suite's input: cotangents, MLP labels and weights
FIXED_SEED = 12
MLP = Layout(
    (MLP_BATCHES * MLP_BATCH, MLP_SIZES[0]),
    -1,
    "mlp",
    name="mlp",
    about=(
        f"MLP {'-'.join(map(str, MLP_SIZES))}, batches of {MLP_BATCH}, "
        "one SGD step (forward, loss, backward, update)"
    ),
    dtypes=("float32",),
)

FULL_LAYOUTS = (
    Layout((4096, 4096), -1, "square"),
    Layout((4096, 4096), 0, "square-axis0"),
    Layout((1_000_000, 64), -1, "tall"),
    Layout((64, 1_000_000), -1, "wide"),
    Layout((16_777_216,), -1, "flat"),
    Layout((8, 128), -1, "tiny"),
    Layout((64, 1024), -1, "small"),
    MLP,
)
# the large layouts 64x smaller; the small-call ones and the MLP are small already
QUICK_LAYOUTS = (
    Layout((512, 512), -1, "square"),
    Layout((512, 512), 0, "square-axis0"),
    Layout((15_625, 64), -1, "tall"),
    Layout((64, 15_625), -1, "wide"),
    Layout((262_144,), -1, "flat"),
    Layout((8, 128), -1, "tiny"),
    Layout((64, 1024), -1, "small"),
    MLP,
)


# The GPU run (``--device gpu``): rows of 1,024, 4,096 and 32,768 entries, 16k to
# 64k rows (256 MiB to 2 GiB of float32, each call 0.1-1 ms on an H200: long
# enough that a launch is noise, short enough for the whole run to take about
# two minutes), plus the call-overhead case 8x128. Their inputs repeat the
# first GPU_DISTINCT_ROWS random rows (see gpu_input): drawing 2^29 normal
# values on the host would cost more than timing them.
GPU_ROLES = frozenset({"gpu-1k", "gpu-4k", "gpu-32k"})
GPU_DISTINCT_ROWS = 1024
GPU_LAYOUTS = (
    Layout((65_536, 1024), -1, "gpu-1k"),
    Layout((32_768, 4096), -1, "gpu-4k"),
    Layout((16_384, 32_768), -1, "gpu-32k"),
    Layout((8, 128), -1, "tiny"),
)
# the GPU layouts with 64x fewer rows (the row lengths are the point)
GPU_QUICK_LAYOUTS = (
    Layout((1024, 1024), -1, "gpu-1k"),
    Layout((512, 4096), -1, "gpu-4k"),
    Layout((256, 32_768), -1, "gpu-32k"),
    Layout((8, 128), -1, "tiny"),
)
GPU_DTYPES = ("float32", "bfloat16")


def numpy_dtype(name: str) -> Any:
    """The NumPy dtype called ``name``; bfloat16 is ml_dtypes' (ImportError without)."""
    if name == "bfloat16":
        import ml_dtypes  # JAX's dependency; only bfloat16 needs it

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def gpu_input(layout: Layout, dtype: str, seed: int) -> np.ndarray:
    """A GPU layout's input: GPU_DISTINCT_ROWS standard-normal rows, repeated.

    The kernels are memory-bound and see no difference between distinct and
    repeated rows (2 GiB passes through the 60 MB L2 either way), while the
    host draws 1,024 rows instead of 16,384 of 32,768 entries. Drawn in
    float32, rounded to ``dtype`` once.
    """
    rows, n = layout.shape
    rng = np.random.default_rng([seed, *layout.shape])
    block = rng.standard_normal((min(rows, GPU_DISTINCT_ROWS), n), dtype=np.float32)
    block = block.astype(numpy_dtype(dtype))
    reps = -(-rows // block.shape[0])
    return np.ascontiguousarray(np.tile(block, (reps, 1))[:rows])


def parse_layouts(spec: str, known: Sequence[Layout]) -> tuple[Layout, ...]:
    """``"4096x4096,4096x4096:0,16777216,mlp"`` -> layouts (``:axis`` defaults to -1).

    A layout equal to one of ``known`` takes its role, so targets still apply;
    a name (``mlp``) picks the named case of ``known``.
    """
    layouts = []
    named = {k.name: k for k in known if k.name is not None}
    for raw in spec.split(","):
        token = raw.strip().lower()
        if not token:
            continue
        if token in named:
            layouts.append(named[token])
            continue
        dims, _, axis_text = token.partition(":")
        try:
            shape = tuple(int(d.replace("_", "")) for d in dims.split("x"))
            axis = int(axis_text) if axis_text else -1
        except ValueError:
            msg = f"--shapes: {raw!r} is not ROWSxCOLS[:AXIS] (e.g. 4096x4096:0)" + (
                f" or {', '.join(named)}" if named else ""
            )
            raise ValueError(msg) from None
        if any(n <= 0 for n in shape) or not -len(shape) <= axis < len(shape):
            msg = f"--shapes: {raw!r} has a non-positive size or an axis out of range"
            raise ValueError(msg)
        role = next(
            (
                k.role
                for k in known
                if k.name is None
                and k.shape == shape
                and k.axis % len(shape) == axis % len(shape)
            ),
            None,
        )
        layouts.append(Layout(shape, axis, role))
    if not layouts:
        msg = "--shapes: no shape given"
        raise ValueError(msg)
    return tuple(layouts)


@dataclass
class Candidate:
    """One implementation of one kind (or one floor) on one backend."""

    backend: str  # the adapter: numpy, torch, jax, dask, cupy, torch-cuda
    impl: str  # softmax_xp, scipy.special, torch, jax.nn, np.exp, copy, ...
    role: str  # ours, peer, floor, variant
    kind: str | None  # None for a floor
    fn: Callable[[], Any]
    to_numpy: Callable[[Any], np.ndarray]
    peer: tuple[str, str] | None = None  # (backend, impl) that ours is held against
    floor: str = "numpy"  # the backend whose exp/copy floors apply
    timing: Timing = field(default_factory=Timing)
    check: dict[str, Any] | None = None
    error: str | None = None
    call: str | None = None  # what is timed, as the table names it (default: impl)
    # GPU: fn only queues the call; sync() waits for the device, once per batch
    sync: Callable[[], Any] | None = None

    @property
    def label(self) -> str:
        """The row name: backend, plus the variant when not the plain call."""
        if self.role == "variant":
            return f"{self.backend} [{self.impl.removeprefix('softmax_xp ')}]"
        return self.backend


@dataclass(frozen=True)
class Skip:
    backend: str
    impl: str
    reason: str


def floors(
    backend: str,
    exp_name: str,
    exp: Callable[[], Any],
    copy: Callable[[], Any],
    to_numpy: Callable[[Any], np.ndarray],
    sync: Callable[[], Any] | None = None,
) -> list[Candidate]:
    """The two floors on ``backend``: its ``exp`` (into a preallocated output
    where it has ``out=``) and a ``copy`` of the input."""
    return [
        Candidate(backend, exp_name, "floor", None, exp, to_numpy, sync=sync),
        Candidate(backend, "copy", "floor", None, copy, to_numpy, sync=sync),
    ]


def peer_candidate(
    backend: str,
    impl: str,
    kind: str,
    fn: Callable[[], Any],
    to_numpy: Callable[[Any], np.ndarray],
    floor: str = "numpy",
    sync: Callable[[], Any] | None = None,
) -> Candidate:
    """The library's own ``kind`` on ``backend``: what ours is held against."""
    return Candidate(backend, impl, "peer", kind, fn, to_numpy, floor=floor, sync=sync)


def _thunk(
    finish: Callable[[Any], Any], f: Callable[[Any], Any], x: Any
) -> Callable[[], Any]:
    """``finish(f(x))`` as a call with no arguments (binds ``f`` and ``x`` now)."""
    return lambda: finish(f(x))


def _import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any import failure means "skip"
        return None, f"{name} is not importable ({type(exc).__name__}: {exc})"


def _version(module: Any) -> str | None:
    return getattr(module, "__version__", None)


def cotangent(x: np.ndarray) -> np.ndarray:
    """The cotangent of the forward+backward rows (the same on every backend).

    torch's ``y.backward(g)`` and JAX's ``grad(sum(f(x) * g))`` both give the
    vector-Jacobian product with ``g``, so their gradients can be checked
    against each other.
    """
    rng = np.random.default_rng([FIXED_SEED, *x.shape])
    return rng.standard_normal(x.shape).astype(x.dtype)


Weights = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MlpProblem:
    """The MLP case's data: batches, labels, initial weights (``x @ w + b``)."""

    batches: list[np.ndarray]
    labels: list[np.ndarray]
    weights: Weights


def mlp_problem(x: np.ndarray) -> MlpProblem:
    """``x`` (the suite's input) cut into batches; labels and weights from FIXED_SEED.

    The labels are random, so the loss stays near ``log(10)`` over the many
    steps a run takes (nothing to learn but noise): every step costs the same.
    The weights are drawn as torch's ``nn.Linear`` draws them.
    """
    rng = np.random.default_rng(FIXED_SEED)
    n_in, n_hidden, n_out = MLP_SIZES
    batches = [np.array(b) for b in np.split(x, MLP_BATCHES)]
    labels = [rng.integers(0, n_out, MLP_BATCH) for _ in batches]
    weights = []
    for fan_in, fan_out in ((n_in, n_hidden), (n_hidden, n_out)):
        bound = 1 / math.sqrt(fan_in)
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(x.dtype))
        weights.append(rng.uniform(-bound, bound, fan_out).astype(x.dtype))
    w1, b1, w2, b2 = weights
    return MlpProblem(batches, labels, (w1, b1, w2, b2))


class Backend:
    """One array library: how to build its inputs and candidates."""

    name = ""
    # what a GPU adapter's candidates call once per batch (see _timing); None:
    # each call synchronises itself
    sync: Callable[[], Any] | None = None

    def __init__(self, sx: Any, *, generic: bool, in_jit: bool = True) -> None:
        self.sx = sx
        self.generic = generic  # also time ours under force_generic()
        self.in_jit = in_jit  # JAX: also time ours inside the caller's jax.jit

    def probe(self) -> str | None:
        """``None`` when this backend can run here, else the reason it cannot."""
        raise NotImplementedError

    def enter(self, layout: Layout) -> None:
        """Called before the candidates of an input on ``layout`` are built."""

    def leave(self) -> None:
        """Called once the run is over: undo what :meth:`enter` changed."""

    def info(self) -> dict[str, Any]:
        """Versions, threads and devices, for the JSON record."""
        return {}

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        raise NotImplementedError

    def memory(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Peak device memory during one call of each kind (GPU adapters only).

        Each entry: ``backend``, ``impl``, ``kind``, ``input_bytes``,
        ``output_bytes`` (the forward's output, plus the gradient for a
        forward+backward), ``peak_extra_bytes`` (the peak during the call
        minus what was allocated before it) and ``method``.
        """
        del x, layout, kinds  # a CPU backend: nothing to measure
        return []

    # helpers shared by the adapters

    def _ours(
        self,
        kind: str,
        xb: Any,
        axis: int,
        finish: Callable[[Any], Any],
        to_numpy: Callable[[Any], np.ndarray],
        peer: tuple[str, str] | None,
        floor: str = "numpy",
    ) -> list[Candidate]:
        sx = self.sx
        f = functools.partial(getattr(sx, kind), axis=axis)
        out = [
            Candidate(
                self.name,
                "softmax_xp",
                "ours",
                kind,
                lambda: finish(f(xb)),
                to_numpy,
                peer,
                floor,
                sync=self.sync,
            )
        ]
        if self.generic:

            def generic() -> Any:
                with sx.force_generic():
                    return finish(f(xb))

            out.append(
                Candidate(
                    self.name,
                    "softmax_xp generic",
                    "variant",
                    kind,
                    generic,
                    to_numpy,
                    peer,
                    floor,
                    sync=self.sync,
                )
            )
        return out


def _np(a: Any) -> np.ndarray:
    return np.asarray(a)


_np_all = _np


ONE_THREAD = "softmax_xp 1 thread"


class NumpyBackend(Backend):
    """NumPy: the floors, ``scipy.special`` as the peer, ours.

    Ours runs twice on the large inputs: as called (all the threads the
    NumPy path takes) and under ``softmax_xp.num_threads(1)``, the variant
    ``numpy [1 thread]``: the threads row, the one-thread floor target and
    Dask's reference. The floors run whatever ``--backends`` says; ``parts``
    drops the rest when NumPy was not asked for (ours stays when Dask needs
    it as its reference). The MLP case has no NumPy row.
    """

    name = "numpy"
    parts = frozenset({"floors", "peer", "ours"})

    def probe(self) -> str | None:
        return None

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"numpy": np.__version__}
        scipy, _ = _import("scipy")
        info["scipy"] = _version(scipy)
        try:
            simd = np.show_config(mode="dicts").get("SIMD Extensions")
        except (TypeError, AttributeError):  # NumPy 1.x: no mode=
            simd = None
        if simd:
            info["numpy_simd"] = simd
        pools, _ = _import("threadpoolctl")
        if pools is not None:
            info["threadpools"] = [
                {k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
                for p in pools.threadpool_info()
            ]
        return info

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        if layout.name is not None:
            return [], []
        y = np.empty_like(x)

        def copy() -> np.ndarray:
            np.copyto(y, x)
            return y

        out = floors("numpy", "np.exp", lambda: np.exp(x, out=y), copy, _np)
        skips = []
        special, reason = _import("scipy.special")
        if special is None and "peer" in self.parts:
            skips.append(Skip("numpy", "scipy.special", reason or ""))
        for kind in kinds:
            if special is not None and "peer" in self.parts:
                g = functools.partial(getattr(special, kind), axis=layout.axis)
                out.append(
                    peer_candidate(
                        "numpy", "scipy.special", kind, functools.partial(g, x), _np
                    )
                )
            if "ours" in self.parts:
                peer = ("numpy", "scipy.special") if "peer" in self.parts else None
                out += self._ours(kind, x, layout.axis, _identity, _np, peer)
                if layout.role not in SMALL_CALL and hasattr(self.sx, "num_threads"):
                    out.append(self._one_thread(kind, x, layout.axis, peer))
        return out, skips

    def _one_thread(
        self, kind: str, x: np.ndarray, axis: int, peer: tuple[str, str] | None
    ) -> Candidate:
        """Ours under ``softmax_xp.num_threads(1)``: the serial NumPy path."""
        f = functools.partial(getattr(self.sx, kind), axis=axis)
        one = self.sx.num_threads

        def call() -> Any:
            with one(1):
                return f(x)

        return Candidate("numpy", ONE_THREAD, "variant", kind, call, _np, peer)


def _identity(a: Any) -> Any:
    return a


class TorchBackend(Backend):
    """PyTorch CPU tensors (zero-copy views of the NumPy input).

    The small calls and the MLP run torch on one intra-op thread unless
    ``--torch-threads`` says otherwise (``threads``): on this project's shared
    2-core machine a second torch thread made an 8x128 ``torch.softmax`` 15-30x
    slower under load (100-190 us against 6-17 us on one thread), which buries
    the call overhead these rows measure; the issue's figures are on one
    thread. The large inputs run at torch's default count.
    """

    name = "torch"
    threads: int | None = None  # --torch-threads: every input at this count

    def probe(self) -> str | None:
        self.torch, reason = _import("torch")
        if reason is None:
            self.default_threads = self.torch.get_num_threads()
        return reason

    def small_call_threads(self) -> int:
        return 1 if self.threads is None else self.threads

    def info(self) -> dict[str, Any]:
        t = self.torch
        return {
            "torch": t.__version__,
            "num_threads": self.threads or self.default_threads,
            "num_threads_small_calls": self.small_call_threads(),
            "num_interop_threads": t.get_num_interop_threads(),
        }

    def enter(self, layout: Layout) -> None:
        small = layout.role in SMALL_CALL or layout.name is not None
        n = self.small_call_threads() if small else self.threads
        n = n or self.default_threads
        if self.torch.get_num_threads() != n:
            self.torch.set_num_threads(n)

    def leave(self) -> None:
        self.torch.set_num_threads(self.default_threads)

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        torch = self.torch
        if layout.name == MLP.name:
            return _torch_mlp_candidates(self.sx, torch, x), []
        with warnings.catch_warnings():
            # the input is read-only on purpose; torch warns that tensors cannot be
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            xt = torch_tensor(torch, x)
        return _torch_candidates(self, torch, xt, layout, kinds, _identity), []


def _torch_numpy(a: Any) -> np.ndarray:
    a = a.detach().cpu()
    if str(a.dtype) == "torch.bfloat16":  # NumPy has none: widened (exactly)
        a = a.float()
    return np.asarray(a.numpy())


def torch_tensor(torch: Any, x: np.ndarray) -> Any:
    """``x`` as a CPU tensor without a copy (ml_dtypes' bfloat16 as torch's)."""
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def sampled_rows(
    to_numpy: Callable[[Any], np.ndarray], layout: Layout
) -> Callable[[Any], np.ndarray]:
    """On a GPU layout, ``to_numpy`` of every k-th row only (64 rows or so).

    The warm-up check then moves a few MiB to the host instead of 2 GiB per
    candidate; the rows are spread over the whole array. Elsewhere unchanged.
    """
    if layout.role not in GPU_ROLES:
        return to_numpy
    step = max(1, layout.shape[0] // 64)
    return lambda a: to_numpy(a[::step])


def _torch_candidates(
    backend: Backend,
    torch: Any,
    xt: Any,
    layout: Layout,
    kinds: Sequence[str],
    finish: Callable[[Any], Any],
) -> list[Candidate]:
    peers = {
        "softmax": torch.softmax,
        "log_softmax": torch.log_softmax,
        "logsumexp": torch.logsumexp,
    }
    name = backend.name
    floor = "numpy" if name == "torch" else name
    sync = backend.sync
    to_numpy = sampled_rows(_torch_numpy, layout)
    out = []
    if name != "torch":  # a device: its own floors
        yt = torch.empty_like(xt)
        out += floors(
            name,
            "torch.exp",
            lambda: finish(torch.exp(xt, out=yt)),
            lambda: finish(yt.copy_(xt)),
            to_numpy,
            sync,
        )
    for kind in kinds:
        g = functools.partial(peers[kind], dim=layout.axis)
        out.append(
            peer_candidate(
                name, "torch", kind, _thunk(finish, g, xt), to_numpy, floor, sync
            )
        )
        out += backend._ours(
            kind, xt, layout.axis, finish, to_numpy, (name, "torch"), floor
        )
    # forward+backward on the small calls, and on the GPU layouts (the issue's
    # "backward at least as fast as torch's")
    if layout.role not in SMALL_CALL | GPU_ROLES:
        return out
    # forward+backward: y = f(t) on a leaf t that requires grad, y.backward(g)
    cot = _torch_cotangent(torch, xt)
    for kind in (k for k in GRAD_KINDS if k in kinds):
        theirs = functools.partial(peers[kind], dim=layout.axis)
        ours = functools.partial(getattr(backend.sx, kind), axis=layout.axis)
        for impl, role, f in (("torch", "peer", theirs), ("softmax_xp", "ours", ours)):
            out.append(
                Candidate(
                    name,
                    impl,
                    role,
                    kind + GRAD,
                    _torch_backward(f, xt, cot, finish),
                    to_numpy,
                    None if role == "peer" else (name, "torch"),
                    floor,
                    call=f"torch.{kind} + backward" if role == "peer" else None,
                    sync=sync,
                )
            )
    return out


def _torch_cotangent(torch: Any, xt: Any) -> Any:
    """:func:`cotangent` for ``xt``, on its device and in its dtype.

    The GPU layouts' cotangents (up to 2^29 entries) are drawn on the device
    from FIXED_SEED instead: only torch's rows use them, ours and torch's
    with the same one.
    """
    if xt.numel() > 2**22:
        gen = torch.Generator(device=xt.device).manual_seed(FIXED_SEED)
        c = torch.randn(xt.shape, generator=gen, device=xt.device)
        return c.to(xt.dtype)
    if xt.dtype == torch.bfloat16:  # drawn in float32, rounded
        c = cotangent(np.zeros(xt.shape, np.float32))
        return torch.from_numpy(c).to(xt.device, torch.bfloat16)
    return torch.from_numpy(cotangent(xt.cpu().numpy())).to(xt.device)


def _torch_backward(
    f: Callable[[Any], Any], xt: Any, cot: Any, finish: Callable[[Any], Any]
) -> Callable[[], Any]:
    """One forward and backward of ``f``: the gradient, fresh each call."""
    t = xt.detach().clone().requires_grad_(True)

    def call() -> Any:
        t.grad = None
        f(t).backward(cot)
        return finish(t.grad)

    return call


def _torch_mlp(
    torch: Any, problem: MlpProblem, loss: Callable[[Any, Any], Any]
) -> Callable[[], Any]:
    """One training step of the MLP with ``loss(logits, labels)``: its loss value.

    ``nn.Linear`` layers holding the problem's weights, ``torch.optim.SGD``;
    the batches in turn.
    """
    w1, b1, w2, b2 = (torch.from_numpy(w) for w in problem.weights)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(*w1.shape), nn.ReLU(), nn.Linear(*w2.shape))
    with torch.no_grad():
        for layer, w, b in ((model[0], w1, b1), (model[2], w2, b2)):
            layer.weight.copy_(w.T)
            layer.bias.copy_(b)
    sgd = torch.optim.SGD(model.parameters(), lr=MLP_LR)
    xs = [torch.from_numpy(b) for b in problem.batches]
    ys = [torch.from_numpy(y) for y in problem.labels]
    turn = itertools.cycle(range(len(xs)))

    def step() -> Any:
        i = next(turn)
        value = loss(model(xs[i]), ys[i])
        sgd.zero_grad()
        value.backward()
        sgd.step()
        return value.detach()

    return step


def _torch_mlp_candidates(sx: Any, torch: Any, x: np.ndarray) -> list[Candidate]:
    """The MLP step: loss from our log_softmax, from torch's, F.cross_entropy."""
    functional = torch.nn.functional
    problem = mlp_problem(x)

    def ours(z: Any, y: Any) -> Any:
        return functional.nll_loss(sx.log_softmax(z, axis=-1), y)

    def theirs(z: Any, y: Any) -> Any:
        return functional.nll_loss(torch.log_softmax(z, dim=-1), y)

    rows = (
        ("torch", "peer", theirs, "step with torch.log_softmax"),
        (
            "F.cross_entropy",
            "peer",
            functional.cross_entropy,
            "step with F.cross_entropy",
        ),
        ("softmax_xp", "ours", ours, None),
    )
    return [
        Candidate(
            "torch",
            impl,
            role,
            MLP_KIND,
            _torch_mlp(torch, problem, loss),
            _torch_numpy,
            ("torch", "torch") if role == "ours" else None,
            call=call,
        )
        for impl, role, loss, call in rows
    ]


def _peak_record(
    backend: str,
    impl: str,
    kind: str,
    x: np.ndarray,
    output_bytes: int,
    extra: int,
    method: str,
) -> dict[str, Any]:
    return {
        "backend": backend,
        "impl": impl,
        "kind": kind,
        "input_bytes": x.nbytes,
        "output_bytes": output_bytes,
        "peak_extra_bytes": extra,
        "method": method,
    }


def _one_result(f: Callable[[Any], Any], x: Any) -> tuple[Any]:
    return (f(x),)


class TorchCudaBackend(Backend):
    """PyTorch CUDA tensors: calls queued, the device synchronised per batch."""

    name = "torch-cuda"

    def probe(self) -> str | None:
        self.torch, reason = _import("torch")
        if reason is None and not _devices("torch", "cuda"):
            reason = "torch.cuda.is_available() is False"
        if reason is None:
            self.sync = self.torch.cuda.synchronize
        return reason

    def info(self) -> dict[str, Any]:
        torch = self.torch
        triton, _ = _import("triton")
        return {
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0),
            "cuda": torch.version.cuda,
            "triton": _version(triton),
        }

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        torch = self.torch
        if layout.name is not None:  # the MLP runs on the CPU backends
            return [], []
        xt = torch_tensor(torch, x).cuda()
        return _torch_candidates(self, torch, xt, layout, kinds, _identity), []

    def memory(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> list[dict[str, Any]]:
        """``max_memory_allocated`` during one call, minus what was allocated
        before it (the input, the cotangent, the leaf of a forward+backward)."""
        torch = self.torch
        cuda = torch.cuda
        if layout.name is not None:
            return []
        xt = torch_tensor(torch, x).cuda()
        method = "torch.cuda.max_memory_allocated() - memory_allocated() before"
        peers = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}
        peers["logsumexp"] = torch.logsumexp
        axis = layout.axis
        out = []

        def peak(call: Callable[[], Any]) -> tuple[int, int]:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
            before = cuda.memory_allocated()
            results = call()
            cuda.synchronize()
            extra = cuda.max_memory_allocated() - before
            nbytes = sum(r.numel() * r.element_size() for r in results)
            return nbytes, extra

        for kind in kinds:
            for impl, f in (
                ("softmax_xp", functools.partial(getattr(self.sx, kind), axis=axis)),
                ("torch", functools.partial(peers[kind], dim=axis)),
            ):
                nbytes, extra = peak(functools.partial(_one_result, f, xt))
                out.append(
                    _peak_record(self.name, impl, kind, x, nbytes, extra, method)
                )
        cot = _torch_cotangent(torch, xt)
        for kind in (k for k in GRAD_KINDS if k in kinds):
            for impl, f in (
                ("softmax_xp", functools.partial(getattr(self.sx, kind), axis=axis)),
                ("torch", functools.partial(peers[kind], dim=axis)),
            ):
                t = xt.detach().clone().requires_grad_(True)

                def step(f: Callable[[Any], Any] = f, t: Any = t) -> tuple[Any, ...]:
                    y = f(t)
                    y.backward(cot)
                    return (y, t.grad)

                step()  # the backward's first run outside the measurement
                t.grad = None
                nbytes, extra = peak(step)
                out.append(
                    _peak_record(self.name, impl, kind + GRAD, x, nbytes, extra, method)
                )
                del t
        return out


class JaxBackend(Backend):
    """JAX (its default device), jitted peers compiled outside the clock."""

    name = "jax"
    gpu_only = False  # the GPU run (--device gpu): skipped where JAX has no GPU

    def probe(self) -> str | None:
        self.jax, reason = _import("jax")
        if reason is None:
            # float64 inputs stay float64 (before any array is created)
            self.jax.config.update("jax_enable_x64", True)
            if self.gpu_only and self.jax.default_backend() != "gpu":
                reason = (
                    f"JAX's default backend is {self.jax.default_backend()}, "
                    "not a GPU (the GPU run times JAX on a GPU only)"
                )
        return reason

    def pallas(self) -> bool:
        """Whether the Pallas row runs: on a GPU, where the kernel module exists."""
        return self.jax.default_backend() == "gpu" and (
            importlib.util.find_spec("softmax_xp._fast.jax_pallas") is not None
        )

    def info(self) -> dict[str, Any]:
        jax = self.jax
        jaxlib, _ = _import("jaxlib")
        device = jax.devices()[0]
        return {
            "jax": jax.__version__,
            "jaxlib": _version(jaxlib),
            "backend": jax.default_backend(),
            "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
            "x64": True,
        }

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        jax = self.jax
        floor = "numpy" if jax.default_backend() == "cpu" else "jax"
        if layout.name == MLP.name:
            return _jax_mlp_candidates(self.sx, jax, x, floor), []
        xj = jax.device_put(x)
        _np = sampled_rows(_np_all, layout)
        out = []

        def finish(a: Any) -> Any:
            return a.block_until_ready()

        if floor == "jax":  # an accelerator: its own floors
            exp = jax.jit(jax.numpy.exp)
            copy = jax.jit(lambda a: a + 0)
            out += floors(
                "jax",
                "jnp.exp",
                lambda: finish(exp(xj)),
                lambda: finish(copy(xj)),
                _np,
            )
        for kind in kinds:
            g = jax.jit(functools.partial(getattr(jax.nn, kind), axis=layout.axis))
            out.append(
                peer_candidate(
                    "jax", "jax.nn (jit)", kind, _thunk(finish, g, xj), _np, floor
                )
            )
            out += self._ours(
                kind, xj, layout.axis, finish, _np, ("jax", "jax.nn (jit)"), floor
            )
            if self.pallas():
                out.append(self._pallas(kind, xj, layout.axis, _np, floor))
            if not self.in_jit:
                continue
            ours_jit = jax.jit(
                functools.partial(getattr(self.sx, kind), axis=layout.axis)
            )
            out.append(
                Candidate(
                    "jax",
                    "softmax_xp in jit",
                    "variant",
                    kind,
                    _thunk(finish, ours_jit, xj),
                    _np,
                    ("jax", "jax.nn (jit)"),
                    floor,
                )
            )
        if layout.role in SMALL_CALL:
            out += self._backward(xj, layout, kinds, floor)
        return out, []

    def _pallas(
        self, kind: str, xj: Any, axis: int, to_numpy: Any, floor: str
    ) -> Candidate:
        """Ours with the Pallas kernels switched on, against ours without.

        Row ``jax [pallas]``; its peer is ours on the XLA path. The switch is
        ``_fast.jax._pallas("gpu")`` around each call (what ``SOFTMAX_XP_PALLAS=1``
        sets at import); each setting keeps its own compiled function.
        """
        from softmax_xp._fast import jax as fast_jax

        f = functools.partial(getattr(self.sx, kind), axis=axis)

        def call() -> Any:
            with fast_jax._pallas("gpu"):
                return f(xj).block_until_ready()

        return Candidate(
            "jax",
            "softmax_xp pallas",
            "variant",
            kind,
            call,
            to_numpy,
            ("jax", "softmax_xp"),
            floor,
        )

    def _backward(
        self, xj: Any, layout: Layout, kinds: Sequence[str], floor: str
    ) -> list[Candidate]:
        """``jit(grad(sum(f(x) * c)))``: jax.nn's ``f`` against ours, both in jit."""
        jax = self.jax
        cot = jax.device_put(cotangent(np.asarray(xj)))
        out = []
        for kind in (k for k in GRAD_KINDS if k in kinds):
            for impl, role, f in (
                ("jax.nn (jit)", "peer", getattr(jax.nn, kind)),
                ("softmax_xp in jit", "variant", getattr(self.sx, kind)),
            ):
                vjp = jax.jit(jax.grad(_weighted_sum(jax, f, layout.axis)))
                out.append(
                    Candidate(
                        "jax",
                        impl,
                        role,
                        kind + GRAD,
                        _block(vjp, xj, cot),
                        _np,
                        None if role == "peer" else ("jax", "jax.nn (jit)"),
                        floor,
                        call=f"jit(grad(jax.nn.{kind}))" if role == "peer" else None,
                    )
                )
        return out


def _weighted_sum(
    jax: Any, f: Callable[..., Any], axis: int
) -> Callable[[Any, Any], Any]:
    """``(x, c) -> sum(f(x) * c)``: its gradient is the VJP of ``f`` with ``c``."""

    def loss(x: Any, c: Any) -> Any:
        return jax.numpy.sum(f(x, axis=axis) * c)

    return loss


def _block(f: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """``f(*args)``, waited for (``block_until_ready``)."""
    return lambda: f(*args).block_until_ready()


def _jax_mlp(
    jax: Any, problem: MlpProblem, log_softmax: Callable[..., Any]
) -> Callable[[], Any]:
    """One jitted training step of the MLP with ``log_softmax`` in its loss.

    The loss is the mean negative log-likelihood, the update plain SGD, the
    weights carried from step to step; the batches in turn.
    """
    jnp = jax.numpy

    def loss(params: Weights, xb: Any, yb: Any) -> Any:
        w1, b1, w2, b2 = params
        logits = jax.nn.relu(xb @ w1 + b1) @ w2 + b2
        picked = jnp.take_along_axis(log_softmax(logits, axis=-1), yb[:, None], 1)
        return -jnp.mean(picked)

    def sgd(params: Weights, xb: Any, yb: Any) -> Any:
        value, grads = jax.value_and_grad(loss)(params, xb, yb)
        new = tuple(p - MLP_LR * g for p, g in zip(params, grads, strict=True))
        return new, value

    step = jax.jit(sgd)
    state = [tuple(jax.device_put(w) for w in problem.weights)]
    xs = [jax.device_put(b) for b in problem.batches]
    ys = [jax.device_put(y) for y in problem.labels]
    turn = itertools.cycle(range(len(xs)))

    def call() -> Any:
        i = next(turn)
        state[0], value = step(state[0], xs[i], ys[i])
        return value.block_until_ready()

    return call


def _jax_mlp_candidates(
    sx: Any, jax: Any, x: np.ndarray, floor: str
) -> list[Candidate]:
    """The MLP step under jax.jit: the loss from jax.nn's log_softmax, from ours."""
    problem = mlp_problem(x)
    return [
        Candidate(
            "jax",
            "jax.nn (jit)",
            "peer",
            MLP_KIND,
            _jax_mlp(jax, problem, jax.nn.log_softmax),
            _np,
            floor=floor,
            call="jit(step with jax.nn.log_softmax)",
        ),
        Candidate(
            "jax",
            "softmax_xp in jit",
            "variant",
            MLP_KIND,
            _jax_mlp(jax, problem, sx.log_softmax),
            _np,
            ("jax", "jax.nn (jit)"),
            floor,
        ),
    ]


class DaskBackend(Backend):
    """Dask arrays over the NumPy input; the clock includes ``compute()``.

    Each call builds the graph (our function on the Dask array) and computes
    it with the threaded scheduler, one worker per usable CPU: what a user
    does, and what the Dask target holds against our NumPy path on one thread.
    """

    name = "dask"
    scheduler = "threads"

    def probe(self) -> str | None:
        self.da, reason = _import("dask.array")
        return reason

    def info(self) -> dict[str, Any]:
        dask, _ = _import("dask")
        return {
            "dask": _version(dask),
            "scheduler": self.scheduler,
            "num_workers": self.workers(),
        }

    @staticmethod
    def workers() -> int:
        """The threaded scheduler's workers: the CPUs this process may use."""
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1

    @staticmethod
    def chunks(layout: Layout) -> tuple[int, ...]:
        """The leading axis in 8 chunks (4096x4096 -> (512, 4096)); small: one."""
        parts = 8 if layout.size >= 65_536 else 1
        return (-(-layout.shape[0] // parts), *layout.shape[1:])

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        if layout.name is not None:
            return [], []
        xd = self.da.from_array(x, chunks=self.chunks(layout))
        workers = self.workers()
        out = []

        def finish(a: Any) -> Any:
            return a.compute(scheduler=self.scheduler, num_workers=workers)

        # held against our NumPy path on one thread where that row runs
        serial = layout.role not in SMALL_CALL and hasattr(self.sx, "num_threads")
        peer = ("numpy", ONE_THREAD if serial else "softmax_xp")
        for kind in kinds:
            out += self._ours(kind, xd, layout.axis, finish, _np, peer)
        return out, []


class CupyBackend(Backend):
    """CuPy on the current GPU, synchronised after every call."""

    name = "cupy"

    def probe(self) -> str | None:
        self.cp, reason = _import("cupy")
        if reason is None and not _devices("cupy", "cuda"):
            _, why = targets("cupy")
            reason = f"cupy finds no GPU ({why})"
        if reason is None:
            cp = self.cp
            self.sync = lambda: cp.cuda.Device().synchronize()
        return reason

    def info(self) -> dict[str, Any]:
        cp = self.cp
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props.get("name", b"")
        return {
            "cupy": cp.__version__,
            "device": name.decode() if isinstance(name, bytes) else str(name),
        }

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        cp = self.cp
        if layout.name is not None:  # the MLP runs on the CPU backends
            return [], []
        if x.dtype.name == "bfloat16":
            return [], [Skip("cupy", "* bfloat16", NO_BFLOAT16)]
        xc = cp.asarray(x)
        yc = cp.empty_like(xc)
        finish = _identity  # calls are queued; self.sync waits once per batch

        def to_numpy_all(a: Any) -> np.ndarray:
            return np.asarray(cp.asnumpy(a))

        to_numpy = sampled_rows(to_numpy_all, layout)
        out = floors(
            "cupy",
            "cp.exp",
            lambda: finish(cp.exp(xc, out=yc)),
            lambda: finish(cp.copyto(yc, xc)),
            to_numpy,
            self.sync,
        )
        skips = []
        special, reason = _import("cupyx.scipy.special")
        for kind in kinds:
            peer = None
            g = getattr(special, kind, None) if special is not None else None
            if g is not None:
                g = functools.partial(g, axis=layout.axis)
                thunk = _thunk(finish, g, xc)
                out.append(
                    peer_candidate(
                        "cupy",
                        "cupyx.scipy.special",
                        kind,
                        thunk,
                        to_numpy,
                        "cupy",
                        self.sync,
                    )
                )
                peer = ("cupy", "cupyx.scipy.special")
            else:
                skips.append(
                    Skip("cupy", f"cupyx.scipy.special.{kind}", reason or "missing")
                )
            out += self._ours(kind, xc, layout.axis, finish, to_numpy, peer, "cupy")
        return out, skips

    def memory(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The memory pool's total after one call, its cached blocks freed first.

        The pool keeps every block it allocated (until ``free_all_blocks``),
        so its growth over the call bounds the call's peak from above (exact
        unless a block freed within the call was reused inside it).
        """
        cp = self.cp
        if layout.name is not None or x.dtype.name == "bfloat16":
            return []
        pool = cp.get_default_memory_pool()
        xc = cp.asarray(x)
        special, _ = _import("cupyx.scipy.special")
        method = "cupy memory pool: total_bytes() growth, free blocks released first"
        out = []
        for kind in kinds:
            calls = [("softmax_xp", getattr(self.sx, kind))]
            if special is not None and hasattr(special, kind):
                calls.append(("cupyx.scipy.special", getattr(special, kind)))
            for impl, f in calls:
                cp.cuda.Device().synchronize()
                pool.free_all_blocks()
                before = pool.total_bytes()
                y = f(xc, axis=layout.axis)
                cp.cuda.Device().synchronize()
                extra = pool.total_bytes() - before
                out.append(
                    _peak_record(self.name, impl, kind, x, y.nbytes, extra, method)
                )
                del y
        return out


NO_BFLOAT16 = "CuPy has no bfloat16 dtype"


def _devices(backend: str, kind: str) -> list[str]:
    """The devices of ``kind`` (``"cuda"``) that the registry finds ``backend`` on."""
    found, _ = targets(backend)
    return [t.device for t in found if t.device.startswith(kind)]


_ADAPTERS: dict[str, type[Backend]] = {
    a.name: a
    for a in (
        NumpyBackend,
        TorchBackend,
        JaxBackend,
        DaskBackend,
        CupyBackend,
        TorchCudaBackend,
    )
}
# in the registry's order: the CPU backends, then the GPU ones
BACKENDS = tuple(n for n in (*matrix(gpu=False), *matrix(gpu=True)) if n in _ADAPTERS)


def make_backends(
    names: Sequence[str],
    sx: Any,
    *,
    generic: bool,
    in_jit: bool = True,
    gpu: bool = False,
) -> tuple[list[Backend], list[Skip]]:
    """The adapters that can run here, and a skip record for each that cannot.

    ``gpu``: the GPU run, whose floors are each device's own (no NumPy floors
    on 2 GiB host arrays) and whose JAX rows need JAX on a GPU.
    """
    ready: list[Backend] = []
    skipped: list[Skip] = []
    if "numpy" not in names and not gpu:
        # the floors always run; Dask is held against ours
        floors = NumpyBackend(sx, generic=False)
        floors.parts = frozenset({"floors", "ours"} if "dask" in names else {"floors"})
        ready.append(floors)
    for name in names:
        backend = _ADAPTERS[name](sx, generic=generic, in_jit=in_jit)
        if isinstance(backend, JaxBackend):
            backend.gpu_only = gpu
        reason = backend.probe()
        if reason is None:
            ready.append(backend)
        else:
            skipped.append(Skip(name, "*", reason))
    return ready, skipped
