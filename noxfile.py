#!/usr/bin/env python3
# /// script
# requires-python = ">=3.11"
# dependencies = ["nox>=2025.2.9"]
# ///
"""Development sessions: one test session per backend, plus lint and types.

``nox`` (or ``./noxfile.py``) runs every session that needs no GPU (the CI
matrix); ``nox -l`` lists them all. Arguments after ``--`` go to pytest, e.g.
``nox -s tests-numpy -- -x``.

Each session has its own virtual environment under ``.nox/``; a file that pip
installs there and another session's environment already holds (torch, JAX,
SciPy...) is hard-linked to that copy, so each is stored once (_share_files).

Environment variables:

- ``SOFTMAX_XP_TORCH``: the torch requirement (default ``torch==2.13.0``). Keep
  it exact: a bare ``torch`` makes pip fetch a multi-GB CUDA build.
- ``SOFTMAX_XP_CUPY``, ``SOFTMAX_XP_TORCH_CUDA``, ``SOFTMAX_XP_JAX_GPU``: what
  the GPU session installs (defaults ``cupy-cuda12x``, ``torch``, ``jax[cuda12]``).
- ``SOFTMAX_XP_TRITON``: the Triton that tests-gpu-logic runs the kernels on
  (default ``triton==3.7.1``, the version torch 2.13.0's CUDA build pins).
- ``SOFTMAX_XP_TEST_WORKERS``: pytest-xdist workers per test session (default
  ``auto``, one per core; ``0`` runs in one process).
- ``SOFTMAX_XP_CONFORMANCE=deep``: the conformance suite's deep profile
  (tests/test_conformance.py; default ``quick``).
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import nox
from packaging.requirements import Requirement

nox.needs_version = ">=2025.2.9"
# pip, not uv: pip finds the CPU torch wheel kept on disk, uv resolves a CUDA one.
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
REPORTS = ROOT / ".nox-reports"
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
TEST_TOOLS = nox.project.dependency_groups(PYPROJECT, "test-tools")
DEV_DEPS = nox.project.dependency_groups(PYPROJECT, "dev")
BENCH_DEPS = nox.project.dependency_groups(PYPROJECT, "bench")
DOCS_DEPS = nox.project.dependency_groups(PYPROJECT, "docs")
BUILD_DEPS = nox.project.dependency_groups(PYPROJECT, "build")

TORCH = shlex.split(os.environ.get("SOFTMAX_XP_TORCH", "torch==2.13.0"))
CUPY = shlex.split(os.environ.get("SOFTMAX_XP_CUPY", "cupy-cuda12x"))
TORCH_CUDA = shlex.split(os.environ.get("SOFTMAX_XP_TORCH_CUDA", "torch"))
JAX_GPU = shlex.split(os.environ.get("SOFTMAX_XP_JAX_GPU", "jax[cuda12]"))
TRITON = shlex.split(os.environ.get("SOFTMAX_XP_TRITON", "triton==3.7.1"))
GPU_LOGIC_DEPS = nox.project.dependency_groups(PYPROJECT, "gpu-logic")
# the GPU kernels' test files: their CPU modes in tests-gpu-logic, on a GPU in
# tests-cupy (tests/conftest.py leaves them out of the CPU backends' sessions)
GPU_KERNEL_TESTS = (
    "tests/test_gpu_triton.py",
    "tests/test_gpu_cupy.py",
    "tests/test_gpu_pallas.py",
)
WORKERS = os.environ.get("SOFTMAX_XP_TEST_WORKERS", "auto")
# JAX's persistent compilation cache, shared by every JAX session and kept
# between runs (tests-jax spends most of its time compiling)
JAX_CACHE = Path(
    os.environ.get(
        "SOFTMAX_XP_JAX_CACHE", Path.home() / ".cache" / "softmax-xp" / "jax"
    )
)


def _dev_tool(name: str) -> str:
    """The requirement for ``name`` as the ``dev`` group pins it."""
    for req in DEV_DEPS:
        if Requirement(req).name == name:
            return req
    msg = f"{name} is not in the dev dependency group of pyproject.toml"
    raise LookupError(msg)


def _install(session: nox.Session, *args: str) -> None:
    """``session.install(*args)``, then the installed files shared (_share_files).

    ``--no-compile``: pip would byte-compile every module of torch, JAX and
    SciPy in every session (tens of seconds each); Python compiles the ones a
    session imports, when it imports them.
    """
    session.install("--no-compile", *args)
    _share_files(session)


def _installed_files(env: Path) -> Iterator[tuple[tuple[str, str], Path]]:
    """((path in site-packages, hash), file) for each file pip recorded with its
    hash in ``env`` (console scripts differ per environment: their shebang)."""
    for pattern in ("lib/python*/site-packages", "Lib/site-packages"):
        for site in env.glob(pattern):
            for record in site.glob("*.dist-info/RECORD"):
                lines = record.read_text(encoding="utf-8").splitlines()
                for row in csv.reader(lines):
                    if len(row) == 3 and row[1]:
                        yield (row[0], row[1]), site / row[0]


def _share_files(session: nox.Session) -> None:
    """Hard-link each file pip installed in this session's environment to the same
    file (same path, same hash in pip's RECORD) in another one under .nox/, as uv
    does: torch, JAX and SciPy are on disk once, not once per session. pip and
    Python replace files and never write into them, so no environment changes
    another's files."""
    here = Path(session.virtualenv.location)
    others: dict[tuple[str, str], Path] = {}
    for env in here.parent.iterdir():
        if env != here and env.is_dir():
            for key, path in _installed_files(env):
                others.setdefault(key, path)
    linked = 0
    for key, path in _installed_files(here):
        source = others.get(key)
        if source is None:
            continue
        try:
            old, new = path.stat(), source.stat()
            if old.st_ino == new.st_ino or old.st_dev != new.st_dev:
                continue
            if old.st_size != new.st_size:
                continue
            temporary = path.with_name(path.name + ".nox-link")
            temporary.unlink(missing_ok=True)
            temporary.hardlink_to(source)
            temporary.replace(path)
        except OSError:  # no hard links on this file system: keep the copy
            continue
        linked += old.st_size
    if linked:
        session.log(f"{linked / 2**20:,.0f} MiB linked to other sessions' copies")


def _pytest(
    session: nox.Session,
    backends: str,
    *deps: str,
    test_deps: bool = True,
    env: dict[str, str] | None = None,
    paths: tuple[str, ...] = (),
    install: bool = True,
    report_name: str | None = None,
    dist: str = "loadfile",
) -> None:
    """Install the project, its test group and ``deps``; run pytest on ``backends``
    (over ``paths``, default the whole suite), spread over ``WORKERS`` processes."""
    if install:
        _install(session, *deps, ".", *(TEST_DEPS if test_deps else TEST_TOOLS))
    REPORTS.mkdir(exist_ok=True)
    name = report_name or session.name
    report = REPORTS / f"{name}.xml"
    report.unlink(missing_ok=True)
    # whole files per worker by default: module fixtures (clusters, compiled
    # kernels) stay shared
    workers = () if WORKERS == "0" else ("-n", WORKERS, "--dist", dist)
    session.run(
        "pytest",
        *workers,
        f"--junitxml={report}",
        "-o",
        f"junit_suite_name={name}",
        "--tb=short",
        "--durations=5",
        *paths,
        *session.posargs,
        env={
            "SOFTMAX_XP_BACKENDS": backends,
            "SOFTMAX_XP_JAX_CACHE": str(JAX_CACHE),
            **(env or {}),
        },
    )


def _floors() -> list[str]:
    """``name==lowest`` for every ``>=`` floor that pyproject.toml declares for the
    runtime, the test group and the CPU backends' extras: what tests-oldest installs."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = [
        *PYPROJECT["project"]["dependencies"],
        *TEST_DEPS,
        *extras["jax"],
        *extras["dask"],
    ]
    pins = []
    for text in declared:
        req = Requirement(text)
        lows = [s.version for s in req.specifier if s.operator == ">="]
        if not lows:
            msg = f"pyproject.toml declares no >= floor for {text!r}"
            raise ValueError(msg)
        # jaxlib comes with the jax[cpu] extra, pinned to jax's own version
        extra = sorted(req.extras | ({"cpu"} if req.name == "jax" else set()))
        pins.append(
            f"{req.name}{'[' + ','.join(extra) + ']' if extra else ''}=={lows[0]}"
        )
    return pins


@nox.session(name="tests-numpy", tags=["tests"])
def tests_numpy(session: nox.Session) -> None:
    """The test suite on NumPy, with the command's extra (``[cli]``: rich's
    progress bar and matplotlib's PNGs) and tqdm (the bar without rich)."""
    _pytest(session, "numpy", ".[cli]", "tqdm")


@nox.session(name="tests-strict", tags=["tests"])
def tests_strict(session: nox.Session) -> None:
    """The test suite on array-api-strict (default and non-default device)."""
    _pytest(session, "array_api_strict")


@nox.session(name="tests-torch", tags=["tests"])
def tests_torch(session: nox.Session) -> None:
    """The test suite on PyTorch (CPU); torch from ``SOFTMAX_XP_TORCH``."""
    _pytest(session, "torch", *TORCH)


@nox.session(name="tests-jax", tags=["tests"])
def tests_jax(session: nox.Session) -> None:
    """The test suite on JAX (CPU)."""
    _pytest(session, "jax", "jax[cpu]")


@nox.session(name="tests-dask", tags=["tests"])
def tests_dask(session: nox.Session) -> None:
    """The test suite on Dask, with a real ``dask.distributed`` cluster (started
    by the tests) and the out-of-core example scaled down (Zarr)."""
    _pytest(session, "dask", "dask[array,distributed]", "zarr")


@nox.session(name="tests-jax-sharding", tags=["tests"])
def tests_jax_sharding(session: nox.Session) -> None:
    """Sharded JAX arrays on 4 CPU devices: ``XLA_FLAGS`` must be set before
    JAX starts, so these tests have a session (and a process) of their own."""
    _pytest(
        session,
        "jax",
        "jax[cpu]",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        paths=("tests/test_jax_sharding.py",),
    )


@nox.session(name="tests-minimal", tags=["tests"])
def tests_minimal(session: nox.Session) -> None:
    """The runtime dependencies only (NumPy, array-api-compat) plus the test tools
    (pytest, hypothesis, mpmath): no SciPy, ml_dtypes or array-api-strict."""
    _pytest(session, "numpy", test_deps=False)


@nox.session(name="tests-generic", tags=["tests"])
def tests_generic(session: nox.Session) -> None:
    """The suite on NumPy with every fast path off (``SOFTMAX_XP_FORCE_GENERIC=1``):
    the generic core keeps the contract on NumPy too, half precision included
    (array-api-strict, which always runs it, has no half types)."""
    _pytest(session, "numpy", env={"SOFTMAX_XP_FORCE_GENERIC": "1"})


@nox.session(name="tests-oldest", tags=["tests"])
def tests_oldest(session: nox.Session) -> None:
    """The lowest versions pyproject.toml declares (numpy, array-api-compat, the
    test tools, JAX and Dask; torch's floor is the CPU build tests-torch runs):
    the whole suite on NumPy and array-api-strict, then the conformance and
    contract suites on JAX and Dask."""
    _install(session, *_floors())
    _install(session, "--no-deps", ".")
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    _pytest(session, "numpy,array_api_strict", install=False)
    _pytest(
        session,
        "jax,dask",
        install=False,
        paths=("tests/test_conformance.py", "tests/test_contract.py"),
        report_name="tests-oldest-jax-dask",
    )


@nox.session(name="tests-gpu-logic", tags=["tests"])
def tests_gpu_logic(session: nox.Session) -> None:
    """The GPU kernels without a GPU: Triton's interpreter on CPU tensors
    (``TRITON_INTERPRET=1``), Pallas in interpret mode, the CuPy kernel's CPU
    twin; each kernel compiled for sm_80 and sm_90 (ptxas, NVRTC, the Pallas
    lowering for CUDA). ``SOFTMAX_XP_GPU_LOGIC=1`` turns a missing tool into an
    error instead of a skip."""
    _pytest(
        session,
        "numpy,torch,jax",
        *TORCH,
        *TRITON,
        "jax[cpu]",
        *GPU_LOGIC_DEPS,
        # the test tools only (ml_dtypes comes with JAX): no SciPy to install
        test_deps=False,
        env={"TRITON_INTERPRET": "1", "SOFTMAX_XP_GPU_LOGIC": "1"},
        paths=GPU_KERNEL_TESTS,
        # test by test: the Triton file alone is half of the session's work
        dist="load",
    )


@nox.session(name="tests-cupy", tags=["tests", "gpu"], default=False)
def tests_cupy(session: nox.Session) -> None:
    """The test suite on the GPU: CuPy, torch on CUDA, JAX on the GPU."""
    _pytest(session, "cupy,torch-cuda,jax-gpu", *CUPY, *TORCH_CUDA, *JAX_GPU)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: the lint rules and the formatting."""
    _install(session, _dev_tool("ruff"))
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check", *session.posargs)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src, with the CPU backends installed so that the fast
    paths are checked against torch's and JAX's own types."""
    _install(session, _dev_tool("mypy"), *TORCH, "jax[cpu]", "dask[array]", ".")
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """``softmax-xp demo`` with every CPU backend installed."""
    _install(session, *TORCH, "jax[cpu]", "dask[array]", "array-api-strict", ".")
    session.run("softmax-xp", "demo", *session.posargs)


@nox.session(name="out-of-core", default=False)
def out_of_core(session: nox.Session) -> None:
    """examples/out_of_core.py: an 8 GiB softmax on 2 workers of 1 GiB each,
    written to Zarr (minutes; ``-- --help`` for the sizes)."""
    _install(session, "dask[array,distributed]", "zarr", ".")
    session.run("python", "examples/out_of_core.py", *session.posargs)


def _bench(session: nox.Session, *args: str) -> None:
    """Install every CPU backend and the suite's peers; run benchmarks/run.py."""
    _install(session, *TORCH, "jax[cpu]", "dask[array]", ".", *BENCH_DEPS)
    session.run("python", "benchmarks/run.py", *args, *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmark suite at full size (minutes); see benchmarks/README.md."""
    _bench(session)


@nox.session(name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """The benchmark suite scaled down (under a minute): proves it runs, judges no speed."""
    _bench(session, "--quick")


@nox.session
def build(session: nox.Session) -> None:
    """The sdist and the wheel as a release would make them (into dist/), checked
    by ``twine check``; the wheel installed into a fresh virtual environment of its
    own, where ``softmax-xp check`` runs the contract on NumPy."""
    _install(session, *BUILD_DEPS)
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), str(ROOT))
    built = sorted(str(f) for f in dist.iterdir())
    session.run("twine", "check", "--strict", *built)
    fresh = Path(session.create_tmp()) / "wheel"
    shutil.rmtree(fresh, ignore_errors=True)
    session.run("python", "-m", "venv", str(fresh))
    bin_dir = fresh / ("Scripts" if os.name == "nt" else "bin")
    wheel = next(f for f in built if f.endswith(".whl"))
    session.run(bin_dir / "python", "-m", "pip", "install", wheel, external=True)
    session.run(bin_dir / "softmax-xp", "check", external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site (docs/_build/html) with warnings as errors (KaTeX renders
    the formulas while it builds: Node.js on the PATH), run the API page's
    doctests, then check the built site in headless Chromium. The peer
    tables run SciPy, torch and JAX, so they are installed; the support matrix
    reads the test sessions' reports and the benchmark page the newest benchmark
    JSON, so this session comes last."""
    _install(session, *DOCS_DEPS, *TORCH, "jax[cpu]", ".")
    build = ROOT / "docs" / "_build"
    shutil.rmtree(build, ignore_errors=True)
    sphinx = ("sphinx-build", "-W", "--keep-going", "-q")
    session.run(*sphinx, "-b", "html", "docs", str(build / "html"))
    session.run(*sphinx, "-b", "doctest", "docs", str(build / "doctest"))
    # check_site exits 2 when no Chromium is found: a failure in CI (.ci/run
    # installs Chromium and sets SOFTMAX_XP_REQUIRE_BROWSER=1), a printed
    # notice elsewhere, so that `nox` also passes on a machine without it
    required = os.environ.get("SOFTMAX_XP_REQUIRE_BROWSER") == "1"
    session.run(
        "python",
        "docs/check_site.py",
        str(build / "html"),
        *session.posargs,
        success_codes=[0] if required else [0, 2],
    )
    # the generators' and the browser check's own tests (they need Sphinx)
    _pytest(session, "numpy", test_deps=False, paths=("tests/test_docs_site.py",))


if __name__ == "__main__":
    nox.main()
