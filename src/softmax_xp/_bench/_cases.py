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
import math
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


@dataclass(frozen=True)
class Layout:
    """An input shape and the axis the functions work along."""

    shape: tuple[int, ...]
    axis: int = -1
    role: str | None = None  # the case of the performance targets it stands for

    @property
    def label(self) -> str:
        dims = "x".join(str(n) for n in self.shape)
        return dims if self.axis in (-1, len(self.shape) - 1) else f"{dims}:{self.axis}"

    @property
    def size(self) -> int:
        return math.prod(self.shape)


FULL_LAYOUTS = (
    Layout((4096, 4096), -1, "square"),
    Layout((4096, 4096), 0, "square-axis0"),
    Layout((1_000_000, 64), -1, "tall"),
    Layout((64, 1_000_000), -1, "wide"),
    Layout((16_777_216,), -1, "flat"),
    Layout((8, 128), -1, "tiny"),
)
# every layout 64x smaller, except the call-overhead one, which is small already
QUICK_LAYOUTS = (
    Layout((512, 512), -1, "square"),
    Layout((512, 512), 0, "square-axis0"),
    Layout((15_625, 64), -1, "tall"),
    Layout((64, 15_625), -1, "wide"),
    Layout((262_144,), -1, "flat"),
    Layout((8, 128), -1, "tiny"),
)


def parse_layouts(spec: str, known: Sequence[Layout]) -> tuple[Layout, ...]:
    """``"4096x4096,4096x4096:0,16777216"`` -> layouts (``:axis`` defaults to -1).

    A layout equal to one of ``known`` takes its role, so targets still apply.
    """
    layouts = []
    for raw in spec.split(","):
        token = raw.strip().lower()
        if not token:
            continue
        dims, _, axis_text = token.partition(":")
        try:
            shape = tuple(int(d.replace("_", "")) for d in dims.split("x"))
            axis = int(axis_text) if axis_text else -1
        except ValueError:
            msg = f"--shapes: {raw!r} is not ROWSxCOLS[:AXIS] (e.g. 4096x4096:0)"
            raise ValueError(msg) from None
        if any(n <= 0 for n in shape) or not -len(shape) <= axis < len(shape):
            msg = f"--shapes: {raw!r} has a non-positive size or an axis out of range"
            raise ValueError(msg)
        role = next(
            (
                k.role
                for k in known
                if k.shape == shape and k.axis % len(shape) == axis % len(shape)
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
) -> list[Candidate]:
    """The two floors on ``backend``: its ``exp`` (into a preallocated output
    where it has ``out=``) and a ``copy`` of the input."""
    return [
        Candidate(backend, exp_name, "floor", None, exp, to_numpy),
        Candidate(backend, "copy", "floor", None, copy, to_numpy),
    ]


def peer_candidate(
    backend: str,
    impl: str,
    kind: str,
    fn: Callable[[], Any],
    to_numpy: Callable[[Any], np.ndarray],
    floor: str = "numpy",
) -> Candidate:
    """The library's own ``kind`` on ``backend``: what ours is held against."""
    return Candidate(backend, impl, "peer", kind, fn, to_numpy, floor=floor)


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


class Backend:
    """One array library: how to build its inputs and candidates."""

    name = ""

    def __init__(self, sx: Any, *, generic: bool, in_jit: bool = True) -> None:
        self.sx = sx
        self.generic = generic  # also time ours under force_generic()
        self.in_jit = in_jit  # JAX: also time ours inside the caller's jax.jit

    def probe(self) -> str | None:
        """``None`` when this backend can run here, else the reason it cannot."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        """Versions, threads and devices, for the JSON record."""
        return {}

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        raise NotImplementedError

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
                )
            )
        return out


def _np(a: Any) -> np.ndarray:
    return np.asarray(a)


class NumpyBackend(Backend):
    """NumPy: the floors, ``scipy.special`` as the peer, ours.

    The floors run whatever ``--backends`` says; ``parts`` drops the rest when
    NumPy was not asked for (ours stays when Dask needs it as its reference).
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
        return out, skips


def _identity(a: Any) -> Any:
    return a


class TorchBackend(Backend):
    """PyTorch CPU tensors (zero-copy views of the NumPy input)."""

    name = "torch"

    def probe(self) -> str | None:
        self.torch, reason = _import("torch")
        return reason

    def info(self) -> dict[str, Any]:
        t = self.torch
        return {
            "torch": t.__version__,
            "num_threads": t.get_num_threads(),
            "num_interop_threads": t.get_num_interop_threads(),
        }

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        torch = self.torch
        with warnings.catch_warnings():
            # the input is read-only on purpose; torch warns that tensors cannot be
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            xt = torch.from_numpy(x)
        return _torch_candidates(self, torch, xt, layout, kinds, _identity), []


def _torch_numpy(a: Any) -> np.ndarray:
    return np.asarray(a.detach().cpu().numpy())


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
    out = []
    if name != "torch":  # a device: its own floors
        yt = torch.empty_like(xt)
        out += floors(
            name,
            "torch.exp",
            lambda: finish(torch.exp(xt, out=yt)),
            lambda: finish(yt.copy_(xt)),
            _torch_numpy,
        )
    for kind in kinds:
        g = functools.partial(peers[kind], dim=layout.axis)
        out.append(
            peer_candidate(
                name, "torch", kind, _thunk(finish, g, xt), _torch_numpy, floor
            )
        )
        out += backend._ours(
            kind, xt, layout.axis, finish, _torch_numpy, (name, "torch"), floor
        )
    return out


class TorchCudaBackend(Backend):
    """PyTorch CUDA tensors, synchronised after every call."""

    name = "torch-cuda"

    def probe(self) -> str | None:
        self.torch, reason = _import("torch")
        if reason is None and not _devices("torch", "cuda"):
            reason = "torch.cuda.is_available() is False"
        return reason

    def info(self) -> dict[str, Any]:
        cuda = self.torch.cuda
        return {"device": cuda.get_device_name(0), "cuda": self.torch.version.cuda}

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        torch = self.torch
        xt = torch.from_numpy(x.copy()).cuda()

        def finish(a: Any) -> Any:
            torch.cuda.synchronize()
            return a

        return _torch_candidates(self, torch, xt, layout, kinds, finish), []


class JaxBackend(Backend):
    """JAX (its default device), jitted peers compiled outside the clock."""

    name = "jax"

    def probe(self) -> str | None:
        self.jax, reason = _import("jax")
        if reason is None:
            # float64 inputs stay float64 (before any array is created)
            self.jax.config.update("jax_enable_x64", True)
        return reason

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
        xj = jax.device_put(x)
        floor = "numpy" if jax.default_backend() == "cpu" else "jax"
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
        return out, []


class DaskBackend(Backend):
    """Dask arrays over the NumPy input; the clock includes ``compute()``."""

    name = "dask"
    scheduler = "threads"

    def probe(self) -> str | None:
        self.da, reason = _import("dask.array")
        return reason

    def info(self) -> dict[str, Any]:
        dask, _ = _import("dask")
        system, _ = _import("dask.system")
        return {
            "dask": _version(dask),
            "scheduler": self.scheduler,
            "num_workers": dask.config.get("num_workers", None)
            or getattr(system, "CPU_COUNT", None),
        }

    @staticmethod
    def chunks(layout: Layout) -> tuple[int, ...]:
        """The leading axis in 8 chunks (4096x4096 -> (512, 4096)); small: one."""
        parts = 8 if layout.size >= 65_536 else 1
        return (-(-layout.shape[0] // parts), *layout.shape[1:])

    def candidates(
        self, x: np.ndarray, layout: Layout, kinds: Sequence[str]
    ) -> tuple[list[Candidate], list[Skip]]:
        xd = self.da.from_array(x, chunks=self.chunks(layout))
        out = []

        def finish(a: Any) -> Any:
            return a.compute(scheduler=self.scheduler)

        for kind in kinds:
            out += self._ours(
                kind, xd, layout.axis, finish, _np, ("numpy", "softmax_xp")
            )
        return out, []


class CupyBackend(Backend):
    """CuPy on the current GPU, synchronised after every call."""

    name = "cupy"

    def probe(self) -> str | None:
        self.cp, reason = _import("cupy")
        if reason is None and not _devices("cupy", "cuda"):
            _, why = targets("cupy")
            reason = f"cupy finds no GPU ({why})"
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
        xc = cp.asarray(x)
        yc = cp.empty_like(xc)

        def finish(a: Any) -> Any:
            cp.cuda.runtime.deviceSynchronize()
            return a

        def to_numpy(a: Any) -> np.ndarray:
            return np.asarray(cp.asnumpy(a))

        out = floors(
            "cupy",
            "cp.exp",
            lambda: finish(cp.exp(xc, out=yc)),
            lambda: finish(cp.copyto(yc, xc)),
            to_numpy,
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
                        "cupy", "cupyx.scipy.special", kind, thunk, to_numpy, "cupy"
                    )
                )
                peer = ("cupy", "cupyx.scipy.special")
            else:
                skips.append(
                    Skip("cupy", f"cupyx.scipy.special.{kind}", reason or "missing")
                )
            out += self._ours(kind, xc, layout.axis, finish, to_numpy, peer, "cupy")
        return out, skips


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
    names: Sequence[str], sx: Any, *, generic: bool, in_jit: bool = True
) -> tuple[list[Backend], list[Skip]]:
    """The adapters that can run here, and a skip record for each that cannot."""
    ready: list[Backend] = []
    skipped: list[Skip] = []
    if "numpy" not in names:  # the floors always run; Dask is held against ours
        floors = NumpyBackend(sx, generic=False)
        floors.parts = frozenset({"floors", "ours"} if "dask" in names else {"floors"})
        ready.append(floors)
    for name in names:
        backend = _ADAPTERS[name](sx, generic=generic, in_jit=in_jit)
        reason = backend.probe()
        if reason is None:
            ready.append(backend)
        else:
            skipped.append(Skip(name, "*", reason))
    return ready, skipped
