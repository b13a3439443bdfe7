"""Softmax of an array larger than the workers' memory, on a Dask cluster, into Zarr.

A local ``dask.distributed`` cluster (by default 2 worker processes with
1 GiB of memory each) softmaxes an 8 GiB float32 array along its *chunked*
axis and writes the result to a Zarr store, with every chunk produced,
normalised and written on the workers; the client only sends the graph and
gets metadata back. The input never exists in one piece: its chunks are
generated on the workers from seeded random numbers (any lazily read source,
such as ``dask.array.from_zarr``, behaves the same way).

The run reports the peak resident memory of every worker process (sampled by
a thread of this process every few milliseconds, from outside the workers),
whether any worker paused, spilled to disk, restarted or died, the client's
own memory growth, the wall time and the throughput. It then checks the
result cheaply: a few rows read back from Zarr against a float64 NumPy
softmax of the same rows regenerated from the seed, and the sum of every row
against 1. The exit status is non-zero if a worker went over its memory
limit, restarted or died, the client's memory grew by a sizeable part of the
output, or a check failed.

Run it from a clone of the repository (the defaults are the full-size run)::

    pip install ".[distributed]"          # Dask, distributed and Zarr
    python examples/out_of_core.py
    python examples/out_of_core.py --shape 256x65536 --chunks 16x16384 \\
        --memory-limit 384MiB              # the 64 MiB version that CI runs

Chunks. The default input is 2048 rows of 1,048,576 logits (a vocabulary of
that size), float32, in chunks of 32 rows by 262,144 columns (32 MiB): every
row spans four chunks, so softmax-xp's Dask path runs its two reads, first
the ``(max, sum)`` summary of each row piece, combined across the row's
chunks, then the output of each chunk from its row's summary.

- Between the two reads Dask keeps each input chunk in memory (it does not
  recompute a chunk that two tasks read), so a worker holds the input of a
  whole band of rows, 32 x 1,048,576 x 4 bytes = 128 MiB, until the band's
  output chunks are written. Bands, not single chunks, are the unit of memory:
  ``chunk rows x columns x itemsize`` has to stay well below the memory limit.
- With one thread per worker and Dask running the tasks of one band before
  starting many others, a worker holds about one or two bands plus the chunk
  it is writing: a few hundred MiB on top of the ~100 MiB that Python, NumPy,
  Dask and Zarr take (measured peak: about 390 MiB of the 1 GiB), which stays
  under the 60 % of the limit where ``distributed`` starts spilling to disk.
- 32 MiB chunks keep the per-task overhead (about a millisecond) small next to
  the few hundred milliseconds of work on each chunk, and give 256 tasks per
  stage, plenty for two workers to share.
- The Zarr chunks are the Dask chunks (each written by one task, no locks),
  uncompressed: random float32 logits do not compress, and a codec would
  measure itself rather than the softmax.

Use ``--shape``, ``--chunks``, ``--workers``, ``--memory-limit`` and
``--threads-per-worker`` to scale it; more threads per worker hold more
bands at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import dask.array as da
import numpy as np
import psutil
import zarr  # noqa: F401 - imported before the run, so its import is not counted as client memory
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster

import softmax_xp as sx

__all__ = ["main"]

F32 = np.dtype(np.float32)
EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)


def _pair(text: str) -> tuple[int, int]:
    """``"2048x1048576"`` as ``(2048, 1048576)``."""
    try:
        rows, cols = (int(p) for p in text.lower().split("x"))
    except ValueError:
        msg = f"expected ROWSxCOLS (e.g. 2048x1048576), got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if rows < 1 or cols < 1:
        msg = f"ROWSxCOLS must be positive, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return rows, cols


def _bytes(text: str) -> int:
    try:
        return int(parse_bytes(text))
    except ValueError:
        msg = f"expected a size such as 1GiB or 384MiB, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(
            "Softmax an array larger than the workers' memory along its chunked "
            "axis on a local Dask cluster, write it to Zarr, report memory and "
            "throughput, and check the result."
        )
    )
    p.add_argument(
        "--shape",
        type=_pair,
        default=(2048, 1 << 20),
        help="ROWSxCOLS of the float32 input; softmax runs along COLS "
        "(default 2048x1048576: 8 GiB)",
    )
    p.add_argument(
        "--chunks",
        type=_pair,
        default=(32, 1 << 18),
        help="ROWSxCOLS of each chunk; must divide the shape and split COLS "
        "(default 32x262144: 32 MiB, four chunks per row)",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument(
        "--threads-per-worker", type=int, default=1, help="threads per worker (1)"
    )
    p.add_argument(
        "--memory-limit",
        type=_bytes,
        default=parse_bytes("1GiB"),
        help="memory limit of each worker (default 1GiB)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the input (0)")
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="Zarr store to write (must not exist; default: a temporary directory)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the Zarr store instead of deleting it"
    )
    p.add_argument(
        "--check-rows",
        type=int,
        default=4,
        help="rows compared with a float64 NumPy softmax after the run (4)",
    )
    p.add_argument(
        "--sample-interval",
        type=float,
        default=0.01,
        help="seconds between memory samples of the worker processes (0.01)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the report as JSON, not as text"
    )
    return p


def _validated(args: argparse.Namespace) -> None:
    (rows, cols), (crow, ccol) = args.shape, args.chunks
    if rows % crow or cols % ccol:
        msg = f"--chunks {crow}x{ccol} must divide --shape {rows}x{cols}"
        raise SystemExit(msg)
    if ccol == cols:
        msg = "--chunks must split the columns: the softmax axis has to be chunked"
        raise SystemExit(msg)
    if args.workers < 1 or args.threads_per_worker < 1 or args.check_rows < 1:
        msg = "--workers, --threads-per-worker and --check-rows must be positive"
        raise SystemExit(msg)
    if args.store is not None and args.store.exists():
        msg = f"--store {args.store} exists; name a new path"
        raise SystemExit(msg)


class _Sampler:
    """Samples the RSS of the worker processes (and of this one) from a thread.

    The sampling runs outside the workers, so it sees their memory even while
    a task holds their event loop or the GIL. It also notes a worker process
    that disappears (killed or restarted by its nanny) and workers that the
    scheduler reports as paused.
    """

    def __init__(self, cluster: LocalCluster, pids: dict[str, int], interval: float):
        self.cluster = cluster
        self.procs = {addr: psutil.Process(pid) for addr, pid in pids.items()}
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self.gone: set[str] = set()
        self.paused: set[str] = set()
        self.client_proc = psutil.Process()
        self.client_start = self.client_proc.memory_info().rss
        self.client_peak = self.client_start
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rss-sampler", daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # one last look

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for addr, proc in self.procs.items():
            try:
                rss = proc.memory_info().rss
            except psutil.NoSuchProcess:
                self.gone.add(addr)
                continue
            self.peak[addr] = max(self.peak[addr], rss)
        self.client_peak = max(self.client_peak, self.client_proc.memory_info().rss)
        # the scheduler runs in this process (LocalCluster); a read-only look
        for addr, ws in list(self.cluster.scheduler.workers.items()):
            if ws.status.name == "paused":
                self.paused.add(addr)
        self.samples += 1


def _disk_writes(dask_worker: Any) -> int:
    """Bytes this worker has spilled to disk since it started."""
    return int(
        sum(
            v
            for k, v in dask_worker.digests_total.items()
            if isinstance(k, tuple) and k[-2:] == ("disk-write", "bytes")
        )
    )


def _reference_softmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 softmax of float32 rows, and ``|x - max|`` (for the error bound)."""
    z = x.astype(np.float64) - np.max(x, axis=1, keepdims=True).astype(np.float64)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True), -z


def _check_rows(got: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    """The stored rows against the float64 softmax of the regenerated input rows.

    The contract allows 4 relative eps (float32) against the exact softmax of
    ``fl(x - max)``, the shift rounded to float32; that rounding moves each
    ``z_i = x_i - max`` by up to ``eps/2 |z_i|``, which changes ``p_i`` by a
    relative ``eps/2 (|z_i| + sum_j p_j |z_j|)`` to first order. Entries below
    the smallest normal float32 are held to that number absolutely.
    """
    ref, absz = _reference_softmax(x)
    spread = np.sum(ref * absz, axis=1, keepdims=True)
    bound = ref * EPS32 * (4.0 + 0.5 * (absz + spread)) * (1 + 1e-6) + TINY32
    err = np.abs(got.astype(np.float64) - ref)
    # and against our own NumPy path on the same rows (both within 4 eps)
    ours = sx.softmax(x, axis=1).astype(np.float64)
    err_ours = np.abs(got.astype(np.float64) - ours)
    bound_ours = 8.0 * EPS32 * np.abs(ours) * (1 + 1e-6) + 2 * TINY32
    return {
        "rows": int(x.shape[0]),
        "max_rel_err_vs_float64": float(np.max(err / np.maximum(ref, TINY32))),
        "within_bound_vs_float64": bool(np.all(err <= bound)),
        "max_rel_diff_vs_numpy_path": float(
            np.max(err_ours / np.maximum(np.abs(ours), TINY32))
        ),
        "within_bound_vs_numpy_path": bool(np.all(err_ours <= bound_ours)),
        "all_finite": bool(np.all(np.isfinite(got))),
    }


def _row_sum_bound(cols: int) -> float:
    """``|sum(p) - 1|`` allowed for a float32 row of ``cols`` entries.

    Summing the per-entry bound of ``_check_rows``: ``sum_i p_i (4 + |z_i|) eps``
    with ``sum_i p_i |z_i| = H(p) - log(sum_j e^(z_j)) <= log(cols)``, plus the
    float64 summation, which is negligible here.
    """
    return EPS32 * (4.0 + math.log(cols)) * (1 + 1e-6) + cols * 2.0**-52


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example with command-line ``argv``; return the report (see ``--help``)."""
    args = _parser().parse_args(argv)
    _validated(args)
    (rows, cols), chunks = args.shape, args.chunks
    nbytes = rows * cols * F32.itemsize
    limit = args.memory_limit
    own_dir = None
    if args.store is None:
        own_dir = Path(tempfile.mkdtemp(prefix="softmax-xp-out-of-core-"))
        store = own_dir / "softmax.zarr"
    else:
        store = args.store
    report: dict[str, Any] = {
        "shape": [rows, cols],
        "chunks": list(chunks),
        "dtype": "float32",
        "input_bytes": nbytes,
        "chunk_bytes": chunks[0] * chunks[1] * F32.itemsize,
        "band_bytes": chunks[0] * cols * F32.itemsize,
        "workers": args.workers,
        "threads_per_worker": args.threads_per_worker,
        "memory_limit": limit,
        "store": str(store),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{format_bytes(psutil.virtual_memory().total)} RAM",
        "load_average_before": os.getloadavg(),
    }
    t_start = time.perf_counter()
    try:
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=args.threads_per_worker,
                processes=True,
                memory_limit=limit,
                dashboard_address=":0",  # any free port (8787 may be taken)
            ) as cluster,
            Client(cluster) as client,
        ):
            report.update(_run(args, cluster, client, store, nbytes))
    finally:
        if not args.keep:
            shutil.rmtree(own_dir or store, ignore_errors=True)
    report["store_kept"] = bool(args.keep)
    report["total_wall_s"] = time.perf_counter() - t_start
    report["load_average_after"] = os.getloadavg()
    report["ok"] = all(report["checks"].values())
    return report


def _run(
    args: argparse.Namespace,
    cluster: LocalCluster,
    client: Client,
    store: Path,
    nbytes: int,
) -> dict[str, Any]:
    (rows, cols), chunks = args.shape, args.chunks
    limit = args.memory_limit
    pids: dict[str, int] = client.run(os.getpid)
    # the input: generated chunk by chunk on the workers, never in one piece
    x = da.random.default_rng(args.seed).standard_normal(
        (rows, cols), chunks=chunks, dtype=F32
    )
    y = sx.softmax(x, axis=1)  # lazy: builds the graph, computes nothing

    with _Sampler(cluster, pids, args.sample_interval) as sampler:
        t0 = time.perf_counter()
        stored = da.to_zarr(y, str(store), compressors=None, compute=True)
        wall = time.perf_counter() - t0

    pids_after: dict[str, int] = client.run(os.getpid)
    spilled: dict[str, int] = client.run(_disk_writes)
    restarted = sorted(
        set(pids) ^ set(pids_after) | {a for a in pids if pids_after.get(a) != pids[a]}
    )
    client_growth = sampler.client_peak - sampler.client_start
    out_bytes = nbytes  # float32 out, as in
    # the client may grow by its bookkeeping, never by a sizeable part of the output
    client_budget = min(64 << 20, out_bytes // 4)
    peak = {addr: int(v) for addr, v in sampler.peak.items()}

    check = _validate(args, client, x, store)
    checks = {
        "no_worker_over_limit": max(peak.values()) < limit,
        "no_worker_restarted_or_died": not restarted and not sampler.gone,
        "nothing_returned_to_client": stored is None and client_growth < client_budget,
        "rows_match_float64_reference": check["within_bound_vs_float64"],
        "rows_match_numpy_path": check["within_bound_vs_numpy_path"],
        "rows_sum_to_one": check["row_sums_within_bound"],
        "all_finite": check["all_finite"],
    }
    return {
        "wall_s": wall,
        "input_gb_per_s": nbytes / wall / 1e9,
        "elements_per_s": rows * cols / wall,
        "peak_worker_rss": peak,
        "peak_worker_rss_max": max(peak.values()),
        "peak_fraction_of_limit": max(peak.values()) / limit,
        "memory_samples": sampler.samples,
        "workers_paused": sorted(sampler.paused),
        "spilled_to_disk_bytes": int(sum(spilled.values())),
        "workers_restarted_or_died": sorted(set(restarted) | sampler.gone),
        "client_rss_growth": client_growth,
        "client_rss_budget": client_budget,
        "to_zarr_returned": repr(stored),
        "check": check,
        "checks": checks,
    }


def _validate(
    args: argparse.Namespace, client: Client, x: Any, store: Path
) -> dict[str, Any]:
    """A few rows against the float64 reference; every row's sum against 1."""
    rows, cols = args.shape
    rng = np.random.default_rng(args.seed + 1)
    picks = {0, rows - 1} | set(rng.integers(0, rows, size=max(0, args.check_rows - 2)))
    idx = [int(i) for i in sorted(picks)[: args.check_rows]]
    out = da.from_zarr(str(store))
    # computed on the workers: only these rows and the row sums come back
    got, regenerated, sums = client.compute(
        [out[idx], x[idx], out.sum(axis=1, dtype=np.float64)], sync=True
    )
    check = _check_rows(np.asarray(got), np.asarray(regenerated))
    dev = np.abs(np.asarray(sums) - 1.0)
    bound = _row_sum_bound(cols)
    check.update(
        checked_rows=idx,
        max_row_sum_error=float(np.max(dev)),
        row_sum_bound=bound,
        row_sums_within_bound=bool(np.all(dev <= bound)),
    )
    return check


def _text(report: dict[str, Any]) -> str:
    """The report for a person: one line per topic."""
    mb = format_bytes
    r, c = report, report.get("check", {})
    lines = [
        (
            f"input      {r['shape'][0]} x {r['shape'][1]} float32 = "
            f"{mb(r['input_bytes'])}, chunks {r['chunks'][0]} x {r['chunks'][1]} "
            f"({mb(r['chunk_bytes'])}; a band of rows: {mb(r['band_bytes'])})"
        ),
        (
            f"cluster    {r['workers']} workers x {r['threads_per_worker']} thread, "
            f"memory limit {mb(r['memory_limit'])} each; {r['machine']}"
        ),
        (
            f"load avg   before {r['load_average_before']}, "
            f"after {r['load_average_after']}"
        ),
        (
            f"wall       {r['wall_s']:.1f} s softmax + write "
            f"({r['total_wall_s']:.1f} s with cluster start and checks)"
        ),
        (
            f"throughput {r['input_gb_per_s']:.3f} GB/s of input, "
            f"{r['elements_per_s'] / 1e6:.1f} M elements/s"
        ),
        (
            f"peak RSS   {', '.join(mb(v) for v in r['peak_worker_rss'].values())} "
            f"per worker: {r['peak_fraction_of_limit']:.0%} of the limit "
            f"({r['memory_samples']} samples)"
        ),
        (
            f"paused     {r['workers_paused'] or 'none'}; spilled to disk "
            f"{mb(r['spilled_to_disk_bytes'])}; restarted or died "
            f"{r['workers_restarted_or_died'] or 'none'}"
        ),
        (
            f"client     RSS grew {mb(r['client_rss_growth'])} (budget "
            f"{mb(r['client_rss_budget'])}); to_zarr returned {r['to_zarr_returned']}"
        ),
        (
            f"rows       {c['checked_rows']}: max rel err "
            f"{c['max_rel_err_vs_float64']:.2e} vs float64; row sums within "
            f"{c['max_row_sum_error']:.2e} of 1 (bound {c['row_sum_bound']:.2e})"
        ),
    ]
    lines += [
        f"check      {k}: {'ok' if v else 'FAILED'}" for k, v in r["checks"].items()
    ]
    kept = "kept" if r["store_kept"] else "deleted"
    lines.append(f"store      {r['store']} ({kept})")
    lines.append("result     " + ("OK" if r["ok"] else "FAILED"))
    return "\n".join(lines)


if __name__ == "__main__":
    # distributed starts its worker processes with "spawn": they import this
    # file again, so everything that runs lives under this guard
    result = main()
    text = (
        json.dumps(result, indent=2, default=str)
        if "--json" in sys.argv
        else _text(result)
    )
    print(text)  # noqa: T201 - the report of a command-line script
    sys.exit(0 if result["ok"] else 1)
