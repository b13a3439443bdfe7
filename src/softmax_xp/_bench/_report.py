"""What a run prints and writes: the ratio table, the targets, JSON, a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cases import (
    FULL_LAYOUTS,
    GPU_DTYPES,
    GPU_LAYOUTS,
    GPU_ROLES,
    GRAD,
    SMALL_CALL,
    DaskBackend,
    Layout,
)

__all__ = [
    "GPU_TARGETS",
    "TARGETS",
    "Target",
    "evaluate_targets",
    "format_report",
    "plot",
    "write_json",
]

Record = dict[str, Any]


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt_percent(r: float | None) -> str:
    return "-" if r is None else f"{100 * r:.0f}%"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


class Index:
    """Find a record by what it measured."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.by_key: dict[tuple[Any, ...], Record] = {}
        for r in records:
            key = (r["layout"], r["dtype"], r["backend"], r["impl"], r["kind"])
            self.by_key[key] = r

    def get(
        self, layout: str, dtype: str, backend: str, impl: str, kind: str | None
    ) -> Record | None:
        return self.by_key.get((layout, dtype, backend, impl, kind))

    def median(self, *key: Any) -> float | None:
        r = self.get(*key)
        return None if r is None else r.get("median_s")


def _floors(
    recs: Sequence[Record], copy: bool = False
) -> dict[str, tuple[str, float | None]]:
    """backend -> (exp floor's name, its median) for one group; the copy's if asked."""
    out: dict[str, tuple[str, float | None]] = {}
    for r in recs:
        if r["role"] == "floor" and (r["impl"] == "copy") == copy:
            out[r["backend"]] = (r["impl"], r.get("median_s"))
    return out


def _groups(records: Sequence[Record]) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r["layout"], r["dtype"]), []).append(r)
    return groups


def table_rows(result: Record) -> list[dict[str, Any]]:
    """One row per (group, kind, ours-like candidate): ours, peer and the ratios.

    A peer that is nobody's peer (``F.cross_entropy`` beside the MLP step) gets
    a row of its own against ours on its backend: shown beside, not a target.
    """
    records = result["records"]
    index = Index(records)
    rows = []
    for (layout, dtype), recs in _groups(records).items():
        floors = _floors(recs)
        copies = _floors(recs, copy=True)
        held = {
            (r["peer"][0], r["peer"][1], r["kind"])
            for r in recs
            if r["role"] in {"ours", "variant"} and r["peer"]
        }
        for r in recs:
            if r["role"] not in {"ours", "variant"}:
                continue
            peers = [
                index.get(layout, dtype, r["peer"][0], r["peer"][1], r["kind"])
                if r["peer"]
                else None
            ]
            if r["role"] == "ours":
                peers += [
                    p
                    for p in recs
                    if p["role"] == "peer"
                    and (p["backend"], p["kind"]) == (r["backend"], r["kind"])
                    and (p["backend"], p["impl"], p["kind"]) not in held
                ]
            for peer_rec in peers:
                rows.append(_row(r, peer_rec, floors, copies))
    return rows


def _row(
    r: Record,
    peer_rec: Record | None,
    floors: dict[str, tuple[str, float | None]],
    copies: dict[str, tuple[str, float | None]],
) -> dict[str, Any]:
    floor_name, floor_t = floors.get(r["floor"], ("-", None))
    copy_t = copies.get(r["floor"], ("-", None))[1]
    ours_t = r.get("median_s")
    peer_t = peer_rec.get("median_s") if peer_rec else None
    if peer_rec is not None:
        peer = peer_rec.get("call") or _peer_name(
            peer_rec["backend"], peer_rec["impl"], r["kind"]
        )
    else:
        peer = _peer_name(r["peer"][0], r["peer"][1], r["kind"]) if r["peer"] else "-"
    return {
        "layout": r["layout"],
        "dtype": r["dtype"],
        "kind": r["kind"],
        "row": r["label"],
        "ours_s": ours_t,
        "peer": peer,
        "peer_s": peer_t,
        "ours_over_peer": _ratio(ours_t, peer_t),
        "floor": floor_name,
        "ours_over_floor": _ratio(ours_t, floor_t),
        # a softmax moves the bytes a copy moves (one read, one write)
        "copy_bandwidth_fraction": _ratio(copy_t, ours_t),
        "check": _check_text(r),
    }


def _peer_name(backend: str, impl: str, kind: str) -> str:
    """How the table names a peer with no ``call`` of its own."""
    if impl.startswith("softmax_xp"):
        thread = " on 1 thread" if impl.endswith("1 thread") else ""
        return f"ours on {backend}{thread}"
    if impl == "jax.nn (jit)":
        return f"jit(jax.nn.{kind})"
    return f"{impl}.{kind}"


def _check_text(r: Record) -> str:
    if r.get("error"):
        return "ERROR"
    check = r.get("check") or {}
    if not check:
        return "-"
    if check.get("reference"):
        return "ref"
    return "ok" if check.get("ok") else "MISMATCH"


@dataclass(frozen=True)
class Target:
    """One performance target: ours against a peer or a floor, on one case.

    ``template`` names the input with ``{shape}`` (and Dask's ``{chunks}``):
    :attr:`title` fills them with the full-size case the target is set for,
    :meth:`title_for` with the input a run actually timed (smaller in quick mode).
    """

    template: str
    case: str
    dtype: str
    kind: str
    ours: tuple[str, str]  # (backend, impl)
    ref: tuple[str, str, bool]  # (backend, impl, is a floor)
    # "speedup": ref / ours >= bound; "ratio": ours / ref <= bound; "memory":
    # ours' peak during a call over (output + input), at most its outputs plus
    # 1% of the input (the bound comes from the run's memory record)
    mode: str
    bound: float

    @property
    def title(self) -> str:
        """The title at full size (``NumPy softmax 4096x4096 float32 vs scipy``)."""
        layout = next(k for k in (*FULL_LAYOUTS, *GPU_LAYOUTS) if k.role == self.case)
        return self.title_for(layout.shape)

    def title_for(self, shape: Sequence[int]) -> str:
        """The title with the input of ``shape`` (``NumPy softmax 512x512 ...``)."""
        dims = "x".join(str(n) for n in shape)
        chunks = DaskBackend.chunks(Layout(tuple(shape)))
        return self.template.format(shape=dims, chunks=chunks)


_NP = ("numpy", "softmax_xp")
_NP_1 = ("numpy", "softmax_xp 1 thread")
_SCIPY = ("numpy", "scipy.special", False)
_TORCH = ("torch", "torch", False)
_JAX_NN = ("jax", "jax.nn (jit)", False)


def _vs_scipy(case: str, label: str, dtype: str, kind: str, bound: float) -> Target:
    """Our NumPy path at least ``bound`` times faster than scipy.special."""
    title = f"NumPy {kind} {label} {dtype} vs scipy"
    return Target(title, case, dtype, kind, _NP, _SCIPY, "speedup", bound)


def _at_most(
    title: str,
    case: str,
    kind: str,
    ours: tuple[str, str],
    ref: tuple[str, str, bool],
    bound: float,
) -> Target:
    """Ours (float32) at most ``bound`` times ``ref``'s time."""
    return Target(title, case, "float32", kind, ours, ref, "ratio", bound)


def _torch_small(kind: str, bound: float) -> Target:
    """torch CPU 8x128 float32: ours at most ``bound`` x torch's own ``kind``."""
    base = kind.removesuffix(" fwd+bwd")
    what = f"{base} forward+backward" if kind != base else base
    title = f"torch {what} {{shape}} float32 vs torch.{base}"
    return _at_most(title, "tiny", kind, ("torch", "softmax_xp"), _TORCH, bound)


TARGETS = (
    _vs_scipy("square", "{shape}", "float32", "softmax", 1.8),
    # the floor is single-threaded (a ufunc), so ours is held to it on one thread
    _at_most(
        "NumPy softmax {shape} float32 on 1 thread vs np.exp floor",
        "square",
        "softmax",
        _NP_1,
        ("numpy", "np.exp", True),
        3.0,
    ),
    Target(
        "NumPy softmax {shape} float32: all threads vs 1 thread",
        "square",
        "float32",
        "softmax",
        _NP,
        (*_NP_1, False),
        "speedup",
        1.5,
    ),
    _vs_scipy("square-axis0", "{shape} axis 0", "float32", "softmax", 1.5),
    _vs_scipy("tall", "{shape}", "float32", "softmax", 1.7),
    _vs_scipy("wide", "{shape}", "float32", "softmax", 1.5),
    _at_most(
        "NumPy softmax {shape} float32 vs scipy (call overhead)",
        "tiny",
        "softmax",
        _NP,
        _SCIPY,
        1.0,
    ),
    _vs_scipy("square", "{shape}", "float32", "logsumexp", 3.0),
    _vs_scipy("square", "{shape}", "float64", "logsumexp", 3.0),
    _at_most(
        "torch softmax {shape} float32 vs torch.softmax",
        "square",
        "softmax",
        ("torch", "softmax_xp"),
        _TORCH,
        1.15,
    ),
    _at_most(
        "torch log_softmax {shape} float32 vs torch.log_softmax",
        "square",
        "log_softmax",
        ("torch", "softmax_xp"),
        _TORCH,
        1.15,
    ),
    _torch_small("softmax", 3.0),
    _torch_small("log_softmax", 3.0),
    _torch_small("softmax fwd+bwd", 3.0),
    _torch_small("log_softmax fwd+bwd", 3.0),
    _at_most(
        "torch MLP step, loss from our log_softmax vs from torch.log_softmax",
        "mlp",
        "mlp step",
        ("torch", "softmax_xp"),
        _TORCH,
        1.15,
    ),
    _at_most(
        "JAX softmax {shape} float32 vs jit(jax.nn.softmax)",
        "square",
        "softmax",
        ("jax", "softmax_xp"),
        _JAX_NN,
        1.1,
    ),
    _at_most(
        "JAX log_softmax {shape} float32 vs jit(jax.nn.log_softmax)",
        "square",
        "log_softmax",
        ("jax", "softmax_xp"),
        _JAX_NN,
        1.1,
    ),
    _at_most(
        "JAX logsumexp {shape} float32 vs jit(jax.nn.logsumexp)",
        "square",
        "logsumexp",
        ("jax", "softmax_xp"),
        _JAX_NN,
        1.1,
    ),
    _at_most(
        "JAX softmax {shape} float32 (called eagerly) vs jit(jax.nn.softmax)",
        "tiny",
        "softmax",
        ("jax", "softmax_xp"),
        _JAX_NN,
        1.3,
    ),
    _at_most(
        "Dask softmax {shape} float32 in {chunks} chunks vs our NumPy (all threads)",
        "square",
        "softmax",
        ("dask", "softmax_xp"),
        (*_NP, False),
        1.5,
    ),
    _at_most(
        "Dask softmax {shape} float32 in {chunks} chunks, threaded scheduler, "
        "vs our NumPy on 1 thread",
        "square",
        "softmax",
        ("dask", "softmax_xp"),
        (*_NP_1, False),
        1.0,
    ),
)


_TC = "torch-cuda"
_TC_OURS = (_TC, "softmax_xp")
_TC_TORCH = (_TC, "torch", False)
_CUPY_OURS = ("cupy", "softmax_xp")


def _gpu_targets() -> tuple[Target, ...]:
    """Issue 14's targets, on each GPU layout (rows of 1,024 / 4,096 / 32,768
    entries) in float32 and bfloat16, and on 8x128 (call overhead)."""
    out: list[Target] = []
    for case in sorted(GPU_ROLES, key=lambda c: int(c.split("-")[1][:-1])):
        for dtype in GPU_DTYPES:
            for kind in ("softmax", "log_softmax"):
                out.append(
                    Target(
                        f"torch CUDA {kind} {{shape}} {dtype}: share of the "
                        "device copy's bandwidth",
                        case, dtype, kind, _TC_OURS, (_TC, "copy", True),
                        "speedup", 0.8,
                    )
                )  # fmt: skip
                for k, what in ((kind, kind), (kind + GRAD, f"{kind} fwd+bwd")):
                    out.append(
                        Target(
                            f"torch CUDA {what} {{shape}} {dtype} vs torch.{kind}",
                            case, dtype, k, _TC_OURS, _TC_TORCH, "ratio", 1.0,
                        )
                    )  # fmt: skip
                    out.append(
                        Target(
                            f"torch CUDA {what} {{shape}} {dtype}: peak memory "
                            "during a call / (output + input)",
                            case, dtype, k, _TC_OURS, ("", "", False), "memory", 0.0,
                        )
                    )  # fmt: skip
            if dtype == "float32":  # CuPy has no bfloat16
                cupyx = ("cupy", "cupyx.scipy.special", False)
                out += [
                    Target(
                        f"CuPy softmax {{shape}} {dtype} vs cupyx.scipy.special",
                        case, dtype, "softmax", _CUPY_OURS, cupyx, "speedup", 3.0,
                    ),
                    Target(
                        f"CuPy softmax {{shape}} {dtype}: share of the device "
                        "copy's bandwidth",
                        case, dtype, "softmax", _CUPY_OURS, ("cupy", "copy", True),
                        "speedup", 0.8,
                    ),
                    Target(
                        f"CuPy softmax {{shape}} {dtype}: peak memory during a "
                        "call / (output + input)",
                        case, dtype, "softmax", _CUPY_OURS, ("", "", False),
                        "memory", 0.0,
                    ),
                ]  # fmt: skip
    out.append(
        Target(
            "torch CUDA softmax {shape} float32 vs torch.softmax (call overhead)",
            "tiny", "float32", "softmax", _TC_OURS, _TC_TORCH, "ratio", 1.5,
        )
    )  # fmt: skip
    return tuple(out)


GPU_TARGETS = _gpu_targets()


def _memory_entry(
    result: Record, t: Target, layout: str, entry: dict[str, Any]
) -> None:
    """Fill ``entry`` for a memory target from the run's memory records."""
    rec = next(
        (
            m
            for m in result.get("memory", [])
            if (m["layout"], m["dtype"], m["backend"], m["impl"], m["kind"])
            == (layout, t.dtype, *t.ours, t.kind)
        ),
        None,
    )
    if rec is None:
        entry["note"] = f"{' '.join(t.ours)} not measured ({_why(result, t.ours[0])})"
        return
    entry["value"] = rec["fraction"]
    entry["bound"] = rec["allowed_fraction"]
    if entry["judged"]:
        entry["met"] = rec["peak_extra_bytes"] <= rec["allowed_bytes"]


def evaluate_targets(result: Record) -> list[dict[str, Any]]:
    """Each target: the measured ratio and met / not met (None: not measured).

    Only a full run judges: in quick mode (inputs 64x smaller, few repeats) a
    target shows its ratio with ``met: None`` and ``judged: False``. The GPU
    run (``config.device == "gpu"``) has its own targets, GPU_TARGETS.
    """
    records = result["records"]
    index = Index(records)
    cases = {r["case"]: r for r in records if r.get("case")}
    judged = result.get("mode", "full") != "quick"
    gpu = result.get("config", {}).get("device") == "gpu"
    out = []
    for t in GPU_TARGETS if gpu else TARGETS:
        entry: dict[str, Any] = {
            "title": t.title,
            "mode": t.mode,
            "bound": t.bound,
            "value": None,
            "met": None,
            "judged": judged,
        }
        case = cases.get(t.case)
        if case is None:
            entry["note"] = "case not in this run"
            out.append(entry)
            continue
        layout = case["layout"]
        entry["layout"] = layout
        if case.get("shape"):
            entry["title"] = t.title_for(case["shape"])
        if not any(k[:2] == (layout, t.dtype) for k in index.by_key):
            entry["note"] = f"{t.dtype} not in this run"
            out.append(entry)
            continue
        if t.mode == "memory":
            _memory_entry(result, t, layout, entry)
            if not judged and entry["value"] is not None:
                entry["note"] = QUICK_NOTE
            out.append(entry)
            continue
        ours = index.median(layout, t.dtype, *t.ours, t.kind)
        ref = index.median(
            layout, t.dtype, t.ref[0], t.ref[1], None if t.ref[2] else t.kind
        )
        if ours is None or ref is None:
            missing = t.ours if ours is None else t.ref[:2]
            entry["note"] = (
                f"{' '.join(missing)} not measured ({_why(result, missing[0])})"
            )
        else:
            value = ref / ours if t.mode == "speedup" else ours / ref
            entry["value"] = value
            if judged:
                entry["met"] = (
                    value >= t.bound if t.mode == "speedup" else value <= t.bound
                )
            else:
                entry["note"] = QUICK_NOTE
        out.append(entry)
    return out


QUICK_NOTE = "indicative (quick mode): judged in full runs only"


def _why(result: Record, backend: str) -> str:
    for s in result.get("skipped", []):
        if s["backend"] == backend:
            return str(s["reason"])
    if backend not in result["config"]["backends"]:
        return "not selected"
    if any(e["backend"] == backend for e in result.get("errors", [])):
        return "it raised: see errors"
    return "skipped or failed"


def format_report(result: Record) -> str:
    """The ratio table, the floors and the targets, as printed."""
    lines = []
    m = result["machine"]
    lines.append(
        f"softmax-xp benchmarks ({result['mode']} mode), {result['date']}: "
        f"{m['cpu_model']}, {m['cpus_usable'] or m['cpu_count']} CPUs, "
        f"Python {m['python']}"
    )
    torch = result.get("backends", {}).get("torch", {})
    threads = torch.get("num_threads")
    if threads is not None:
        small = torch.get("num_threads_small_calls", threads)
        lines.append(
            f"torch CPU threads: {threads}"
            + (f" ({small} on 8x128, 64x1024 and the MLP)" if small != threads else "")
        )
    for name in ("torch-cuda", "cupy", "jax"):
        info = result.get("backends", {}).get(name, {})
        if info.get("device"):
            lines.append(f"{name}: {info['device']}")
    lines.append(
        "times are medians of the repeats; ours/peer < 1 means ours is faster; "
        "floor = exp with out= on the same input"
    )
    records = result["records"]
    rows = table_rows(result)
    header = (
        f"  {'kind':<19} {'backend':<18} {'ours':>10}  {'peer':<33} {'peer time':>10} "
        f"{'ours/peer':>9} {'ours/floor':>10} {'copy BW':>7}  check"
    )
    for (layout, dtype), recs in _groups(records).items():
        nbytes = recs[0]["nbytes"]
        floor_text = "   ".join(
            f"{r['backend']} {r['impl']} {fmt_time(r.get('median_s'))}"
            + (f" ({r['gbytes_per_s']:.1f} GB/s)" if r.get("gbytes_per_s") else "")
            for r in recs
            if r["role"] == "floor"
        )
        lines.append("")
        about = recs[0].get("about") or fmt_bytes(nbytes)
        lines.append(
            f"{layout} {dtype} ({about})"
            + (f"   floors: {floor_text}" if floor_text else "")
        )
        lines.append(header)
        for row in rows:
            if (row["layout"], row["dtype"]) != (layout, dtype):
                continue
            lines.append(
                f"  {row['kind']:<19} {row['row']:<18} {fmt_time(row['ours_s']):>10}  "
                f"{row['peer']:<33} {fmt_time(row['peer_s']):>10} "
                f"{_fmt_ratio(row['ours_over_peer']):>9} "
                f"{_fmt_ratio(row['ours_over_floor']):>10} "
                f"{_fmt_percent(row['copy_bandwidth_fraction']):>7}  {row['check']}"
            )
        mine = {
            (r["backend"], r["kind"]) for r in recs if r["role"] in {"ours", "variant"}
        }
        peers_only = [
            r
            for r in recs
            if r["role"] == "peer" and (r["backend"], r["kind"]) not in mine
        ]
        for r in peers_only:
            call = r.get("call") or r["impl"]
            lines.append(f"  {r['kind']:<19} {r['backend']:<18} {'-':>10}  {call}")
    lines += _memory_lines(result)
    lines.append("")
    lines.append("targets (ratios of medians measured in this run):")
    quick = result["mode"] == "quick"
    if quick:
        lines.append(
            "  quick mode: these ratios are indicative; targets are judged in full "
            "runs only"
        )
        lines.append(
            "  (the large inputs here are 64x smaller, the repeats few and short)"
        )
    for t in result["targets"]:
        status = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        what = {"speedup": "peer/ours", "memory": "peak/(out+in)"}.get(
            t["mode"], "ours/ref"
        )
        sign = ">=" if t["mode"] == "speedup" else "<="
        # quick mode judges nothing: a measured ratio comes without a verdict
        verdict = "" if quick and t["value"] is not None else f"{status:<8} "
        if t["value"] is None:
            lines.append(f"  {verdict}{t['title']}: {t.get('note', '')}")
        else:
            lines.append(
                f"  {verdict}{t['title']}: {what} = "
                f"{t['value']:.3f}x (target {sign} {t['bound']:.2f}x)"
            )
    if result.get("skipped"):
        lines.append("")
        lines.append("skipped:")
        lines += [
            f"  {s['backend']} {s['impl']}: {s['reason']}" for s in result["skipped"]
        ]
    mismatches = [r for r in rows if r["check"] == "MISMATCH"]
    if mismatches:
        lines.append("")
        lines.append(
            f"warning: {len(mismatches)} result(s) disagree with the reference "
            "(see 'check' in the JSON)"
        )
    if result.get("errors"):
        lines.append("")
        lines.append("errors (the same error on several inputs is listed once):")
        seen: dict[tuple[str, str, str], list[str]] = {}
        for e in result["errors"]:
            key = (e["backend"], e.get("impl", ""), e["error"])
            seen.setdefault(key, []).append(
                f"{e['layout']} {e['dtype']} {e.get('kind') or ''}".strip()
            )
        for (backend, impl, error), where in seen.items():
            more = f" and {len(where) - 1} more" if len(where) > 1 else ""
            lines.append(f"  {backend} {impl} on {where[0]}{more}: {error}")
    lines.append("")
    lines.append(
        f"{result['duration_s']:.0f} s; load average {result['loadavg_start']} -> "
        f"{result['loadavg_end']}"
    )
    return "\n".join(lines)


def _memory_lines(result: Record) -> list[str]:
    """The GPU run's peak memory per call: one line per measurement."""
    peaks = result.get("memory") or []
    if not peaks:
        return []
    title = (
        "peak device memory during one call, beyond what was allocated before "
        "(the issue's bound: the output(s) plus 1% of the input):"
    )
    lines = ["", title]
    for m in peaks:
        verdict = "ok" if m["peak_extra_bytes"] <= m["allowed_bytes"] else "OVER"
        lines.append(
            f"  {m['layout']:<12} {m['dtype']:<8} {m['backend']:<10} "
            f"{m['impl']:<19} {m['kind']:<19} "
            f"peak {fmt_bytes(m['peak_extra_bytes']):>10}  "
            f"output(s) {fmt_bytes(m['output_bytes']):>10}  "
            f"input {fmt_bytes(m['input_bytes']):>10}  "
            f"{m['fraction']:.3f} of out+in  {verdict}"
        )
    return lines


def write_json(result: Record, path: Path) -> None:
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")


_KIND_COLOURS = {
    "softmax": "tab:blue",
    "log_softmax": "tab:orange",
    "logsumexp": "tab:green",
}
# the bar plot's other kinds: the small-call gradients and the training step
_MORE_COLOURS = {
    "softmax fwd+bwd": "tab:purple",
    "log_softmax fwd+bwd": "tab:red",
    "mlp step": "tab:brown",
}
_COLOURS = {**_KIND_COLOURS, **_MORE_COLOURS}
CLI_HINT = "pip install 'softmax-xp[cli]'"


def _plotted(result: Record) -> list[Record]:
    """The records the scaling plot draws: the forward kinds and the floors on
    arrays (throughput means nothing for a gradient or a training step)."""
    return [
        r
        for r in result["records"]
        if r.get("gbytes_per_s")
        and (r["kind"] is None or r["kind"] in _KIND_COLOURS)
        and not r.get("about")
    ]


def _grid(plt: Any, rows: int, cols: int, cell: tuple[float, float]) -> Any:
    """A figure of ``rows`` x ``cols`` plots, each ``cell`` inches (width, height)."""
    return plt.subplots(
        rows,
        cols,
        figsize=(cell[0] * cols, cell[1] * rows),
        squeeze=False,
        constrained_layout=True,
    )


def _save(plt: Any, fig: Any, path: Path, result: Record, what: str) -> None:
    """Title ``fig`` (run, ``what``, date, CPU), write it to ``path``, close it."""
    fig.suptitle(
        f"softmax-xp {result['mode']} benchmarks, {what}{result['date']}, "
        f"{result['machine']['cpu_model']}",
        fontsize=9,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or why there is no PNG."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "matplotlib":
            return f"no PNG: matplotlib is not installed ({CLI_HINT})"
        return f"no PNG: matplotlib is not importable ({exc}; {CLI_HINT})"
    return plt


def _small(r: Record) -> bool:
    """A case whose bars are times per call: 8x128, 64x1024 and the MLP."""
    return r.get("case") in SMALL_CALL or bool(r.get("about"))


def plot(result: Record, path: Path) -> str | None:
    """One panel per input: input GB/s for the large arrays, time per call for
    8x128, 64x1024 and the MLP (where the cost of a call is what is measured);
    ours solid, peers hatched, the floors (exp, copy) as lines; log scales.

    Returns ``None`` when written, else why not (matplotlib missing).
    """
    plt = _pyplot()
    if isinstance(plt, str):
        return plt
    records = [
        r
        for r in result["records"]
        if r.get("median_s") and (r["kind"] is None or r["kind"] in _COLOURS)
    ]
    groups = _groups(records)
    if not groups:
        return "no PNG: nothing was timed"
    layouts = list(dict.fromkeys(k[0] for k in groups))
    dtypes = list(dict.fromkeys(k[1] for k in groups))
    fig, axes = _grid(plt, len(layouts), len(dtypes), (6.5, 2.9))
    drawn: set[str] = set()
    for i, layout in enumerate(layouts):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            recs = groups.get((layout, dtype))
            if not recs:
                ax.set_visible(False)
                continue
            small = _small(recs[0])
            if recs[0].get("about"):
                drawn |= _plot_named(ax, recs)
            else:
                drawn |= _plot_group(ax, recs, small)
            what = "time per call" if small else "throughput"
            ax.set_title(f"{layout} {dtype}: {what}", fontsize=9)
            if not recs[0].get("about"):
                ax.set_ylabel(
                    "us per call (lower is better)"
                    if small
                    else "input GB/s (higher is better)",
                    fontsize=8,
                )
    mpl = plt.matplotlib
    kinds = [k for k in _COLOURS if k in drawn]
    handles = [
        mpl.patches.Patch(color=_COLOURS[k], label=f"{k} (ours)") for k in kinds
    ] + [
        mpl.patches.Patch(
            facecolor="white", edgecolor=_COLOURS[k], hatch="///", label=f"{k} (peer)"
        )
        for k in kinds
    ]
    for name, colour, style in _FLOOR_STYLES:
        if name in drawn:
            handles.append(
                mpl.lines.Line2D([], [], color=colour, ls=style, label=_FLOOR[name])
            )
    fig.legend(
        handles=handles, loc="outside lower center", ncol=4, fontsize=8,
        handlelength=3,
    )  # fmt: skip
    _save(plt, fig, path, result, "")
    return None


_FLOOR = {"np.exp": "exp floor (np.exp, out=)", "copy": "copy floor (np.copyto)"}
_FLOOR_STYLES = (("np.exp", "black", "--"), ("copy", "grey", ":"))


def _plot_group(ax: Any, recs: Sequence[Record], small: bool) -> set[str]:
    """One input's bars (ours, and its peer hatched, per kind and backend) and
    floors; GB/s, or microseconds per call if ``small``. What it drew comes back
    (kinds, floors' names) for the legend."""

    def value(r: Record) -> float:
        return 1e6 * float(r["median_s"]) if small else float(r["gbytes_per_s"])

    ours = [r for r in recs if r["role"] in {"ours", "variant"}]
    kinds = [k for k in _COLOURS if any(r["kind"] == k for r in ours)]
    columns = list(dict.fromkeys(r["label"] for r in ours))
    width = 0.8 / max(1, 2 * len(kinds))
    peer_of = {
        (r["backend"], r["impl"], r["kind"]): r for r in recs if r["role"] == "peer"
    }
    heights = []
    for c, column in enumerate(columns):
        for k, kind in enumerate(kinds):
            mine = next(
                (r for r in ours if r["label"] == column and r["kind"] == kind), None
            )
            if mine is None:
                continue
            x0 = c - 0.4 + (2 * k + 0.5) * width
            heights.append(value(mine))
            ax.bar(x0, heights[-1], width, color=_COLOURS[kind])
            peer = mine["peer"]
            p = peer_of.get((peer[0], peer[1], kind)) if peer else None
            if p is not None:
                heights.append(value(p))
                ax.bar(
                    x0 + width,
                    heights[-1],
                    width,
                    facecolor="white",
                    edgecolor=_COLOURS[kind],
                    hatch="///",
                )
    drawn = set(kinds)
    for name, colour, style in _FLOOR_STYLES:
        for r in recs:
            if r["role"] == "floor" and r["impl"] == name:
                heights.append(value(r))
                ax.axhline(heights[-1], color=colour, ls=style, lw=1.2)
                drawn.add(name)
    ax.set_yscale("log")
    if heights:
        # the bars grow from below the lowest value, so that every one shows
        ax.set_ylim(min(heights) / 3, max(heights) * 2)
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    return drawn


def _plot_named(ax: Any, recs: Sequence[Record]) -> set[str]:
    """A named case (the MLP step): one horizontal bar per candidate, ours solid
    and the peers hatched, each named, microseconds per step."""
    bars = [r for r in recs if r["role"] in {"ours", "variant", "peer"}]
    bars.sort(key=lambda r: (r["backend"], r["role"] == "peer"))
    names = [
        f"ours ({r['label']})"
        if r["role"] != "peer"
        else r.get("call") or _peer_name(r["backend"], r["impl"], r["kind"])
        for r in bars
    ]
    for y, r in enumerate(bars):
        colour = _COLOURS.get(r["kind"], "tab:grey")
        style: dict[str, Any] = (
            {"color": colour}
            if r["role"] != "peer"
            else {"facecolor": "white", "edgecolor": colour, "hatch": "///"}
        )
        ax.barh(y, 1e6 * float(r["median_s"]), 0.7, **style)
    ax.set_yticks(range(len(bars)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("us per step (shorter is better)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    return {r["kind"] for r in bars}


def plot_scaling(result: Record, path: Path) -> str | None:
    """Throughput against input size: one panel per kind and dtype.

    Each backend is one hue: a solid line with dots for ours (``label``, so the
    ``[in jit]`` and ``[generic]`` variants get their own line), a lighter
    dashed one with hollow squares for its peer; the floors (exp and copy) are
    black and grey lines on the same axes. Returns ``None`` when written, else
    why not.
    """
    plt = _pyplot()
    if isinstance(plt, str):
        return plt
    records = _plotted(result)
    kinds = [k for k in _KIND_COLOURS if any(r["kind"] == k for r in records)]
    dtypes = list(dict.fromkeys(r["dtype"] for r in records))
    if not kinds:
        return "no PNG: nothing was timed"
    fig, axes = _grid(plt, len(dtypes), len(kinds), (5.0, 3.6))
    # tab20 comes in pairs of one hue: the dark one for ours, the light one for
    # its peer (dashed, hollow squares), so that the two differ, legend included
    pairs = plt.get_cmap("tab20").colors
    labels = list(
        dict.fromkeys(r["label"] for r in records if r["role"] in {"ours", "variant"})
    )
    colour = {label: pairs[(2 * i) % 20] for i, label in enumerate(labels)}
    light = {label: pairs[(2 * i + 1) % 20] for i, label in enumerate(labels)}

    def line(ax: Any, recs: Sequence[Record], **style: Any) -> None:
        best: dict[int, float] = {}  # one point per size (the faster layout)
        for r in recs:
            best[r["nbytes"]] = max(best.get(r["nbytes"], 0.0), r["gbytes_per_s"])
        sizes = sorted(best)
        if sizes:
            ax.plot(sizes, [best[s] for s in sizes], **style)

    for i, dtype in enumerate(dtypes):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            recs = [r for r in records if r["dtype"] == dtype]
            drawn: set[tuple[str, str]] = set()  # a peer once, in its first colour
            for label in labels:
                mine = [
                    r
                    for r in recs
                    if r["role"] in {"ours", "variant"}
                    and r["label"] == label
                    and r["kind"] == kind
                ]
                line(ax, mine, color=colour[label], marker="o", ms=4, lw=1.8,
                     label=f"{label} (ours)")  # fmt: skip
                peer = mine[0]["peer"] if mine and mine[0]["peer"] else None
                if peer is not None and tuple(peer) not in drawn:
                    drawn.add((peer[0], peer[1]))
                    theirs = [
                        r
                        for r in recs
                        if r["role"] == "peer"
                        and (r["backend"], r["impl"]) == (peer[0], peer[1])
                        and r["kind"] == kind
                    ]
                    line(
                        ax,
                        theirs,
                        color=light[label],
                        ls=(0, (4, 2)),
                        lw=1.4,
                        marker="s",
                        ms=4,
                        mfc="white",
                        label=f"peer of {label}: {peer[1]}",
                    )
            for impl, grey, style in _FLOOR_STYLES:
                floor = [
                    r
                    for r in recs
                    if r["role"] == "floor"
                    and r["impl"] == impl
                    and r["backend"] == "numpy"
                ]
                line(ax, floor, color=grey, ls=style, lw=1.2, label=_FLOOR[impl])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{kind} {dtype}", fontsize=9)
            ax.set_xlabel("input bytes", fontsize=8)
            if j == 0:
                ax.set_ylabel("input GB/s", fontsize=8)
            ax.tick_params(labelsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, names, loc="outside lower center", ncol=4, fontsize=7,
        handlelength=4,
    )  # fmt: skip
    _save(plt, fig, path, result, "throughput against size, ")
    return None
