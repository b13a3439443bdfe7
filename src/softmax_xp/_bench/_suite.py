"""One run of the suite: every group, every candidate, timed in one process."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _machine
from ._cases import (
    GPU_ROLES,
    Backend,
    Candidate,
    Layout,
    Skip,
    TorchBackend,
    gpu_input,
    make_backends,
    numpy_dtype,
)
from ._timing import calibrate, round_robin

__all__ = ["Config", "run_suite"]

# agreement with the reference at warm-up: a wrong answer is fast for nothing
_TOLERANCE = {"float16": 1e-2, "bfloat16": 2e-2, "float32": 2e-4, "float64": 1e-9}


@dataclass
class Config:
    layouts: tuple[Layout, ...]
    dtypes: tuple[str, ...]
    backends: tuple[str, ...]
    kinds: tuple[str, ...]
    repeat: int
    min_time: float
    budget: float
    min_repeat: int
    quick: bool
    generic: bool = False
    in_jit: bool = True
    torch_threads: int | None = None
    seed: int = 0
    gpu: bool = False  # the GPU run: GPU layouts, device floors, memory peaks
    extra: dict[str, Any] = field(default_factory=dict)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _error(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()


def _order(cands: list[Candidate]) -> list[Candidate]:
    """The reference first: scipy.special, else our NumPy path; then the rest."""

    def rank(c: Candidate) -> int:
        if (c.backend, c.impl) == ("numpy", "scipy.special"):
            return 0
        if (c.backend, c.impl) == ("numpy", "softmax_xp"):
            return 1
        return 2

    return sorted(cands, key=rank)


def _warm_up(cands: list[Candidate], dtype: str) -> None:
    """Call each candidate once (compiling JAX) and check it against a reference.

    One kind at a time, so that at most two full-size results are alive. The
    kinds are those of the candidates: the forward ones, and where built the
    forward+backward rows (gradients checked against the first backend's peer)
    and the MLP step (the first step's loss, from the same weights and batch).
    """
    for c in cands:
        if c.kind is None:
            try:
                c.fn()
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                c.error = _error(exc)
    tol = _TOLERANCE.get(dtype, 1e-6)
    for kind in dict.fromkeys(c.kind for c in cands if c.kind is not None):
        ref: np.ndarray | None = None
        ref_name = ""
        for c in _order([c for c in cands if c.kind == kind]):
            try:
                got = c.to_numpy(c.fn())
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                c.error = _error(exc)
                continue
            if ref is None:
                ref, ref_name = got, f"{c.backend} {c.impl}"
                c.check = {"reference": True, "ok": True}
                continue
            check: dict[str, Any] = {"against": ref_name}
            if got.shape != ref.shape:
                check.update(ok=False, note=f"shape {got.shape} != {ref.shape}")
            else:
                a, b = got.astype(np.float64), ref.astype(np.float64)
                finite = np.isfinite(a) & np.isfinite(b)
                diff = np.abs(a - b)[finite]
                check["max_abs_diff"] = float(diff.max()) if diff.size else 0.0
                check["ok"] = bool(
                    np.allclose(a, b, rtol=tol, atol=tol, equal_nan=True)
                )
            c.check = check
            del got
        del ref


def _record(c: Candidate, layout: Layout, dtype: str, nbytes: int) -> dict[str, Any]:
    t = c.timing
    rec: dict[str, Any] = {
        "layout": layout.label,
        "case": layout.role,
        "shape": list(layout.shape),
        "axis": layout.axis,
        "dtype": dtype,
        "nbytes": nbytes,
        "backend": c.backend,
        "impl": c.impl,
        "role": c.role,
        "kind": c.kind,
        "label": c.label,
        "peer": list(c.peer) if c.peer else None,
        "floor": c.floor,
        "number": t.number,
        "times_s": t.times,
        "median_s": t.median if t.times else None,
        "min_s": t.best if t.times else None,
        "check": c.check,
        "error": c.error,
        "call": c.call,
    }
    if layout.name is not None:
        rec["about"] = layout.about
    if t.times:
        rec["gbytes_per_s"] = nbytes / t.median / 1e9
        rec["elements_per_s"] = layout.size / t.median
    return rec


def _free(backends: Sequence[Backend]) -> None:
    gc.collect()
    for b in backends:
        if b.name == "jax":
            b.jax.clear_caches()  # type: ignore[attr-defined]


def _run_group(
    backends: Sequence[Backend],
    layout: Layout,
    dtype: str,
    x: np.ndarray,
    config: Config,
) -> tuple[
    list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[Skip]
]:
    """Warm up, check, calibrate and time every candidate on one input; on the
    GPU run, then measure the peak memory of one call (records, peaks, errors,
    skips)."""
    where = {"layout": layout.label, "dtype": dtype}
    cands: list[Candidate] = []
    skips: list[Skip] = []
    errors: list[dict[str, Any]] = []
    for b in backends:
        try:
            b.enter(layout)
            built, skipped = b.candidates(x, layout, config.kinds)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            errors.append({**where, "backend": b.name, "error": _error(exc)})
            _log(f"  error {b.name}: {errors[-1]['error']}")
            continue
        cands += built
        skips += skipped
    t0 = time.perf_counter()
    _warm_up(cands, dtype)
    t1 = time.perf_counter()
    for c in cands:
        if c.error is None:
            try:
                c.timing = calibrate(c.fn, config.min_time, sync=c.sync)
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                c.error = _error(exc)
    live = [(c.fn, c.timing) for c in cands if c.error is None]
    t2 = time.perf_counter()
    round_robin(live, config.repeat, config.budget, config.min_repeat)
    _log(
        f"  warm-up and checks {t1 - t0:.1f} s, calibration {t2 - t1:.1f} s, "
        f"repeats {time.perf_counter() - t2:.1f} s"
    )
    records = [_record(c, layout, dtype, x.nbytes) for c in cands]
    for c in cands:
        if c.error:
            errors.append(
                {
                    **where,
                    "backend": c.backend,
                    "impl": c.impl,
                    "kind": c.kind,
                    "error": c.error,
                }
            )
            _log(f"  error {c.backend} {c.impl} {c.kind}: {c.error}")
    del cands, live  # the GPU arrays they hold, before the memory is measured
    gc.collect()
    peaks = _memory(backends, layout, dtype, x, config, errors) if config.gpu else []
    return records, peaks, errors, skips


def _memory(
    backends: Sequence[Backend],
    layout: Layout,
    dtype: str,
    x: np.ndarray,
    config: Config,
    errors: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The GPU adapters' peak memory during one call of each kind."""
    where = {"layout": layout.label, "dtype": dtype}
    out = []
    for b in backends:
        try:
            peaks = b.memory(x, layout, config.kinds)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            errors.append({**where, "backend": b.name, "error": _error(exc)})
            _log(f"  error {b.name} (memory): {errors[-1]['error']}")
            continue
        for p in peaks:
            allowed = p["output_bytes"] + 0.01 * p["input_bytes"]
            out.append(
                {
                    **where,
                    "case": layout.role,
                    "shape": list(layout.shape),
                    "axis": layout.axis,
                    **p,
                    # the bound: the output(s) plus 1% of the input
                    "allowed_bytes": allowed,
                    "fraction": p["peak_extra_bytes"]
                    / (p["output_bytes"] + p["input_bytes"]),
                    "allowed_fraction": allowed
                    / (p["output_bytes"] + p["input_bytes"]),
                }
            )
    return out


def make_input(layout: Layout, dtype: str, seed: int) -> np.ndarray:
    """The group's input, read-only: one random stream per layout, so that every
    dtype gets the same values, rounded (GPU layouts: see ``gpu_input``)."""
    if layout.role in GPU_ROLES:
        x = gpu_input(layout, dtype, seed)
    else:
        rng = np.random.default_rng([seed, *layout.shape])
        x = rng.standard_normal(layout.shape).astype(numpy_dtype(dtype))
    x.flags.writeable = False  # nothing may write into the input
    return x


def run_suite(
    config: Config,
    sx: Any,
    root: Path,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Time everything ``config`` asks for; the raw record (JSON-able).

    ``progress(done, total, label)``, when given, is called after each input.
    """
    started = time.perf_counter()
    result: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if config.quick else "full",
        "date": _machine.now(),
        "loadavg_start": _machine.loadavg(),
        "machine": _machine.machine_info(),
        "softmax_xp": {
            "version": getattr(sx, "__version__", None),
            "path": str(Path(sx.__file__).parent),
            "git": _machine.git_state(root),
        },
        "config": {
            "layouts": [l.label for l in config.layouts],
            "dtypes": list(config.dtypes),
            "backends": list(config.backends),
            "kinds": list(config.kinds),
            "repeat": config.repeat,
            "min_time_s": config.min_time,
            "budget_s": config.budget,
            "min_repeat": config.min_repeat,
            "generic": config.generic,
            "in_jit": config.in_jit,
            "seed": config.seed,
            "device": "gpu" if config.gpu else "any",
            "statistic": "median of per-call times over repeats (min kept too)",
            **config.extra,
        },
    }
    backends, skips = make_backends(
        config.backends,
        sx,
        generic=config.generic,
        in_jit=config.in_jit,
        gpu=config.gpu,
    )
    if config.torch_threads is not None:
        for b in backends:
            if isinstance(b, TorchBackend):
                b.threads = config.torch_threads
            elif b.name == "torch-cuda":
                b.torch.set_num_threads(config.torch_threads)  # type: ignore[attr-defined]
    result["backends"] = {}
    for b in backends:
        try:
            result["backends"][b.name] = b.info()
        except Exception as exc:  # noqa: BLE001 - info is best effort
            result["backends"][b.name] = {"error": _error(exc)}
    for s in skips:
        _log(f"skip {s.backend}: {s.reason}")

    records: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    groups = [
        (l, d)
        for l in config.layouts
        for d in config.dtypes
        if l.dtypes is None or d in l.dtypes
    ]
    for i, (layout, dtype) in enumerate(groups, 1):
        t0 = time.perf_counter()
        try:
            x = make_input(layout, dtype, config.seed)
        except ImportError as exc:  # bfloat16 without ml_dtypes
            skips.append(Skip("*", f"* {dtype}", f"no {dtype} input: {exc}"))
            _log(f"skip {layout.label} {dtype}: {exc}")
            continue
        recs, peaks, errs, group_skips = _run_group(backends, layout, dtype, x, config)
        del x
        _free(backends)
        records += recs
        memory += peaks
        errors += errs
        new = [s for s in group_skips if s not in skips]
        for s in new:
            _log(f"skip {s.backend} {s.impl}: {s.reason}")
        skips += new
        _log(
            f"[{i}/{len(groups)}] {layout.label} {dtype}: "
            f"{time.perf_counter() - t0:.1f} s"
        )
        if progress is not None:
            progress(i, len(groups), f"{layout.label} {dtype}")
    for b in backends:
        b.leave()
    result.update(
        records=records,
        memory=memory,
        skipped=[
            {"backend": s.backend, "impl": s.impl, "reason": s.reason} for s in skips
        ],
        errors=errors,
        loadavg_end=_machine.loadavg(),
        duration_s=round(time.perf_counter() - started, 2),
    )
    return result
