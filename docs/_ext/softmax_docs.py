"""Sphinx extension: generate the pages' tables from real runs at build time.

On ``builder-inited`` (before any source is read) it writes, under
``docs/_generated/``:

- ``contract_peers.md``: the contract's inputs run through softmax-xp, SciPy,
  torch and JAX (``peers.py``, in a subprocess; a peer that does not import
  reads "not installed");
- ``support_matrix.md``: passed / failed / skipped per nox test session, and
  per test module, from the JUnit reports in ``.nox-reports/`` (or the folder
  named by ``SOFTMAX_XP_DOCS_REPORTS``); without reports the page says so;
- ``bench.md`` (and ``bench.png``): the ratio tables of the newest benchmark
  JSON in ``benchmarks/results/`` (or ``SOFTMAX_XP_DOCS_BENCH``, a file).

Nothing here makes the build fail when a peer, a report or a benchmark run is
missing: the generated page says what was missing instead. A file is only
rewritten when its text changes, so unchanged pages are not rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

LOG = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
DASH = "\N{EN DASH}"  # an empty table cell

# the backends each nox test session selects (SOFTMAX_XP_BACKENDS in noxfile.py)
SESSION_BACKENDS = {
    "tests-numpy": "numpy",
    "tests-strict": "array-api-strict",
    "tests-torch": "torch (CPU)",
    "tests-jax": "jax (CPU)",
    "tests-dask": "dask (+ distributed)",
    "tests-jax-sharding": "jax, 4 CPU devices",
    "tests-minimal": "numpy, runtime deps only",
    "tests-generic": "numpy, fast paths off",
    "tests-gpu-logic": "GPU kernels in CPU mode (torch + Triton, jax, numpy)",
    "tests-cupy": "cupy, torch-cuda, jax-gpu",
}


def _write(name: str, text: str) -> None:
    GENERATED.mkdir(exist_ok=True)
    path = GENERATED / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# --- the contract beside the peers ------------------------------------------


def contract_peers() -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("JAX_PLATFORMS", "cpu")
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "peers.py")],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "```{note}\nThe peer table timed out while these docs were built.\n```\n"
    if done.returncode != 0:
        LOG.warning("peers.py failed:\n%s", done.stderr[-2000:])
        return (
            "```{note}\nThe peer table could not be generated when these docs "
            "were built (`docs/_ext/peers.py` failed).\n```\n"
        )
    return done.stdout


# --- the support matrix from the JUnit reports -------------------------------


def _count(case: ET.Element) -> str:
    for child in case:
        if child.tag in ("failure", "error"):
            return "failed"
        if child.tag == "skipped":
            return "skipped"
    return "passed"


def _module(case: ET.Element) -> str:
    name = case.get("classname") or case.get("name") or "?"
    # "tests.test_x" or "tests.test_x.TestClass"; collection skips have the
    # module in name and an empty classname
    parts = name.split(".")
    for part in parts:
        if part.startswith("test_"):
            return part
    return name


def support_matrix() -> str:
    folder = Path(os.environ.get("SOFTMAX_XP_DOCS_REPORTS", ROOT / ".nox-reports"))
    reports = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    out = []
    if not reports:
        out.append(
            "```{note}\nNo test reports were found when these docs were built "
            f"(looked in `{folder.name}/`). Run the test sessions first "
            "(`nox`, or `nox -s tests-numpy`); each writes "
            "`.nox-reports/<session>.xml`, and the next docs build turns them "
            "into this table.\n```\n"
        )
        return "\n".join(out)
    sessions: dict[str, dict[str, Any]] = {}
    modules: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for path in reports:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            LOG.warning("unreadable JUnit report %s: %s", path, exc)
            continue
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        session = path.stem
        totals = {"passed": 0, "failed": 0, "skipped": 0}
        stamps = []
        for suite in suites:
            stamps.append(suite.get("timestamp", "")[:16].replace("T", " "))
            for case in suite.iter("testcase"):
                outcome = _count(case)
                totals[outcome] += 1
                per = modules[_module(case)].setdefault(
                    session, {"passed": 0, "failed": 0, "skipped": 0}
                )
                per[outcome] += 1
        sessions[session] = {
            **totals,
            "when": min(filter(None, stamps), default="?"),
            "host": suites[0].get("hostname", "?") if suites else "?",
        }
    out.append(
        f"Read from {len(sessions)} JUnit report(s) in `{folder.name}/` when these "
        "docs were built. Each row is one nox session as it last ran on the "
        "machine that built the docs; a session that has not run there has no "
        "row. Times are UTC.\n"
    )
    out.append("| session | backends | passed | failed | skipped | run at |")
    out.append("|---|---|---|---|---|---|")
    for name, row in sessions.items():
        out.append(
            f"| `{name}` | {SESSION_BACKENDS.get(name, '?')} | {row['passed']} | "
            f"{row['failed']} | {row['skipped']} | {row['when']} |"
        )
    absent = [s for s in SESSION_BACKENDS if s not in sessions]
    if absent:
        out.append("\nNo report for: " + ", ".join(f"`{s}`" for s in absent) + ".")
    names = list(sessions)
    out.append(
        "\n**Per test module** (passed / failed / skipped; a dash: the module "
        "did not run in that session)\n"
    )
    out.append("| module | " + " | ".join(f"`{s}`" for s in names) + " |")
    out.append("|---|" + "---|" * len(names))
    for module in sorted(modules):
        cells = []
        for s in names:
            c = modules[module].get(s)
            cells.append(
                DASH if c is None else f"{c['passed']} / {c['failed']} / {c['skipped']}"
            )
        out.append(f"| `{module}` | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# --- the benchmark tables ----------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds >= 0.1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


# where `softmax-xp bench` (default ./softmax-xp-bench) and benchmarks/run.py write
BENCH_DIRS = (ROOT / "benchmarks" / "results", ROOT / "softmax-xp-bench")


def _newest_bench() -> Path | None:
    named = os.environ.get("SOFTMAX_XP_DOCS_BENCH")
    if named:
        return Path(named)
    runs = sorted(
        (p for d in BENCH_DIRS for p in d.glob("bench-*.json")),
        key=lambda p: p.stat().st_mtime,
    )
    full = [p for p in runs if "-full-" in p.name]
    return (full or runs or [None])[-1]


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def _copy(src: Path, name: str) -> None:
    GENERATED.mkdir(exist_ok=True)
    target = GENERATED / name
    if not target.exists() or target.read_bytes() != src.read_bytes():
        shutil.copyfile(src, target)


def bench_tables() -> str:
    path = _newest_bench()
    if path is None or not path.is_file():
        return (
            "```{note}\nNo benchmark results were found when these docs were "
            "built (`benchmarks/results/` and `softmax-xp-bench/` are empty or "
            "absent; neither is under version control). Run `softmax-xp bench` "
            "or `nox -s bench` and "
            "rebuild; until then, see the figures of one recorded run on "
            "[the performance page](performance.md).\n```\n"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    m = data.get("machine", {})
    out = [
        (
            f"From `{_shown(path)}` ({data.get('mode', '?')} mode, "
            f"{data.get('date', '?')}, {data.get('duration_s', 0):.0f} s). Machine: "
            f"{m.get('cpu_model', '?')}, {m.get('cpus_usable', '?')} CPUs usable, "
            f"{m.get('memory_gib', '?')} GiB, Python {m.get('python', '?')}, "
            f"load average {data.get('loadavg_start', ['?'])[0]} at the start."
        ),
        "",
        "Backends: "
        + "; ".join(
            f"{name} ("
            + ", ".join(
                f"{k} {v}" for k, v in info.items() if isinstance(v, str | int | bool)
            )
            + ")"
            for name, info in data.get("backends", {}).items()
        )
        + ".",
        "",
    ]
    if data.get("skipped"):
        out.append(
            "Skipped: "
            + "; ".join(f"{s['backend']}: {s['reason']}" for s in data["skipped"])
            + ".\n"
        )
    for suffix, alt in (
        ("", "input GB/s for every input, backend and peer, with the floors"),
        ("-scaling", "throughput against size per backend, with peers and the floor"),
    ):
        png = path.with_name(f"{path.stem}{suffix}.png")
        if png.is_file():
            _copy(png, f"bench{suffix}.png")
            out += [
                f"```{{image}} _generated/bench{suffix}.png",
                f":alt: {alt}",
                "```",
                "",
            ]
    targets = data.get("targets") or []
    if targets:
        out += ["| target | bound | measured | |", "|---|---|---|---|"]
        for t in targets:
            op = ">=" if t.get("mode") == "speedup" else "<="
            if t.get("value") is None:  # not measured: the suite says why
                measured, verdict = DASH, t.get("note") or "not measured"
            else:
                measured = f"{t['value']:.2f}x"
                if t.get("met") is None:  # a quick run: the ratio, not judged
                    verdict = "indicative (quick run)"
                else:
                    verdict = "met" if t["met"] else "**not met**"
            out.append(
                f"| {t['title']} | {op} {t['bound']:.2f}x | {measured} | {verdict} |"
            )
        out.append("")
    records = data.get("records", [])
    peers = {
        (r["layout"], r["dtype"], r["kind"], r["backend"], r["impl"]): r
        for r in records
        if r.get("role") == "peer"
    }
    floors = {
        (r["layout"], r["dtype"], r["backend"]): r
        for r in records
        if r.get("role") == "floor" and r.get("impl") == "np.exp"
    }
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("role") in ("ours", "variant") and r.get("median_s"):
            groups[(r["layout"], r["dtype"])].append(r)
    for (layout, dtype), rows in groups.items():
        shape = "x".join(map(str, rows[0]["shape"]))
        out += [
            f"**{layout} {dtype}** (shape {shape}, axis {rows[0]['axis']})",
            "",
            (
                "| function | backend | ours | peer | peer time | ours / peer | "
                "ours / `np.exp` | check |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            peer = None
            if r.get("peer"):
                peer = peers.get((layout, dtype, r["kind"], *r["peer"]))
            floor = floors.get((layout, dtype, r.get("floor") or "numpy"))
            ratio = (
                f"{r['median_s'] / peer['median_s']:.2f}"
                if peer and peer.get("median_s")
                else DASH
            )
            to_floor = (
                f"{r['median_s'] / floor['median_s']:.2f}"
                if floor and floor.get("median_s")
                else DASH
            )
            check = r.get("check") or {}
            out.append(
                f"| {r['kind']} | {r['label']} | {_ms(r['median_s'])} | "
                f"{' '.join(r['peer']) if r.get('peer') else DASH} | "
                f"{_ms(peer['median_s']) if peer else DASH} | {ratio} | {to_floor} | "
                f"{'ok' if check.get('ok') else check.get('ok', DASH)} |"
            )
        out.append("")
    return "\n".join(out)


def generate(app: Sphinx) -> None:
    names = ("contract_peers.md", "support_matrix.md", "bench.md")
    if app.builder.format != "html" and all((GENERATED / n).is_file() for n in names):
        return  # e.g. the doctest builder after the HTML build: reuse the tables
    _write("contract_peers.md", contract_peers())
    _write("support_matrix.md", support_matrix())
    _write("bench.md", bench_tables())


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
