"""The GPU benchmark and benchmarks/gpu_check.sh, on a machine without a GPU.

What can be proven here: the GPU run's code imports and runs to the end with
every GPU adapter skipped (and says why), its targets are judged right on
synthetic timings, its helpers (inputs, sampled checks, batch sync, the sync
debug plugin) do what they say, and the script's logic (steps, logs, time
limits, failures, exit status) holds in its dry run and with a fake Python.
No timing is asserted.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
needs_script = pytest.mark.skipif(
    not SCRIPT.is_file() or shutil.which("bash") is None or not shutil.which("timeout"),
    reason="not a source checkout, or no bash / coreutils timeout",
)


def _has_gpu() -> bool:
    from softmax_xp._backends import targets

    for name in ("torch", "cupy"):
        found, _ = targets(name)
        if any(t.device.startswith("cuda") for t in found):
            return True
    return False


no_gpu = pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")


# --- the GPU run's shapes and inputs ------------------------------------------


def test_gpu_layouts_are_the_issue_s() -> None:
    from softmax_xp._bench._cases import (
        GPU_DTYPES,
        GPU_LAYOUTS,
        GPU_QUICK_LAYOUTS,
        GPU_ROLES,
    )

    large = [k for k in GPU_LAYOUTS if k.role in GPU_ROLES]
    assert sorted(k.shape[1] for k in large) == [1024, 4096, 32_768]
    assert all(16_384 <= k.shape[0] <= 65_536 for k in large)
    assert all(k.axis == -1 for k in GPU_LAYOUTS)
    assert ("tiny", (8, 128)) in [(k.role, k.shape) for k in GPU_LAYOUTS]
    assert GPU_DTYPES == ("float32", "bfloat16")
    quick = {k.role: k.shape for k in GPU_QUICK_LAYOUTS}
    for k in large:  # the same row lengths, 64x fewer rows
        assert quick[k.role] == (k.shape[0] // 64, k.shape[1])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_input(dtype: str) -> None:
    from softmax_xp._bench._cases import GPU_DISTINCT_ROWS, Layout, numpy_dtype
    from softmax_xp._bench._suite import make_input

    if dtype == "bfloat16":
        pytest.importorskip("ml_dtypes")
    layout = Layout((2 * GPU_DISTINCT_ROWS + 5, 16), -1, "gpu-1k")
    x = make_input(layout, dtype, 0)
    assert x.shape == layout.shape
    assert x.dtype == numpy_dtype(dtype)
    assert not x.flags.writeable
    assert x.flags.c_contiguous
    # the first rows repeated, standard normal
    np.testing.assert_array_equal(x[GPU_DISTINCT_ROWS:], x[: x.shape[0] - 1024])
    block = x[:GPU_DISTINCT_ROWS].astype(np.float64)
    assert len(np.unique(block[:, 0])) > GPU_DISTINCT_ROWS // 2
    assert abs(block.mean()) < 0.1
    assert 0.9 < block.std() < 1.1
    # the same seed, the same values
    np.testing.assert_array_equal(make_input(layout, dtype, 0), x)


def test_sampled_rows() -> None:
    from softmax_xp._bench._cases import Layout, sampled_rows

    a = np.arange(1024 * 3).reshape(1024, 3)
    gpu = sampled_rows(np.asarray, Layout((1024, 3), -1, "gpu-1k"))
    np.testing.assert_array_equal(gpu(a), a[::16])
    assert gpu(a).shape == (64, 3)
    cpu = sampled_rows(np.asarray, Layout((1024, 3), -1, "square"))
    np.testing.assert_array_equal(cpu(a), a)


def test_batch_sync_once_per_batch_inside_the_clock() -> None:
    from softmax_xp._bench._timing import batch, calibrate, round_robin

    calls: list[str] = []
    assert batch(lambda: calls.append("f"), 3, lambda: calls.append("sync")) >= 0
    assert calls == ["f", "f", "f", "sync"]
    calls.clear()
    timing = calibrate(lambda: calls.append("f"), 0.0, sync=lambda: calls.append("s"))
    assert timing.number == 1
    assert calls == ["f", "s"]
    round_robin([(lambda: calls.append("f"), timing)], 3, 10.0)
    assert calls == ["f", "s"] * 3
    assert len(timing.times) == 3


# --- the GPU adapters on a machine without a GPU --------------------------------


@no_gpu
def test_gpu_adapters_skip_with_a_reason() -> None:
    import softmax_xp as sx
    from softmax_xp._bench._cases import make_backends

    ready, skipped = make_backends(
        ["torch-cuda", "cupy", "jax"], sx, generic=False, gpu=True
    )
    assert ready == []  # and no NumPy floors in the GPU run
    reasons = {s.backend: s.reason for s in skipped}
    assert set(reasons) == {"torch-cuda", "cupy", "jax"}
    if (
        "torch" in reasons["torch-cuda"]
        and "not importable" not in reasons["torch-cuda"]
    ):
        assert reasons["torch-cuda"] == "torch.cuda.is_available() is False"
    assert reasons["cupy"].startswith(("cupy is not importable", "cupy finds no GPU"))
    if "not importable" not in reasons["jax"]:
        assert "not a GPU" in reasons["jax"]


@no_gpu
def test_bench_device_gpu_without_a_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``softmax-xp bench --device gpu`` here: every GPU adapter skipped, with
    its reason, the run completes (status 0), every target n/a with a note."""
    from softmax_xp.__main__ import main

    status = main(
        ["bench", "--device", "gpu", "--quick", "--no-plot", "--no-progress",
         "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    [path] = tmp_path.glob("bench-gpu-quick-*.json")
    data = json.loads(path.read_text())
    assert data["config"]["device"] == "gpu"
    assert data["config"]["dtypes"] == ["float32", "bfloat16"]
    assert data["config"]["layouts"] == ["1024x1024", "512x4096", "256x32768", "8x128"]
    assert data["records"] == []
    assert data["memory"] == []
    assert {s["backend"] for s in data["skipped"]} >= {"torch-cuda", "cupy", "jax"}
    assert "skipped:" in out
    assert "torch-cuda *: " in out
    assert data["targets"]
    for t in data["targets"]:
        assert t["met"] is None
        assert t["value"] is None
        assert t.get("note"), t
    # nothing ran: each target named at full size, with why it has no value
    assert (
        "n/a      CuPy softmax 16384x32768 float32 vs cupyx.scipy.special: "
        "case not in this run" in out
    )


# --- the GPU targets on synthetic results --------------------------------------


def _gpu_result(
    target: Any, ours_s: float, ref_s: float, peak: float
) -> dict[str, Any]:
    """A GPU run holding one target's two timings (and a memory record)."""
    from softmax_xp._bench._cases import GPU_LAYOUTS

    layout = next(k for k in GPU_LAYOUTS if k.role == target.case)

    def record(backend: str, impl: str, kind: str | None, t: float) -> dict[str, Any]:
        return {
            "layout": layout.label,
            "case": layout.role,
            "shape": list(layout.shape),
            "dtype": target.dtype,
            "backend": backend,
            "impl": impl,
            "kind": kind,
            "median_s": t,
        }

    ref_kind = None if target.ref[2] else target.kind
    out_b, in_b = 1000, 1000
    return {
        "mode": "full",
        "config": {"backends": [], "device": "gpu"},
        "records": [
            record(*target.ours, target.kind, ours_s),
            record(target.ref[0] or "x", target.ref[1] or "y", ref_kind, ref_s),
        ],
        "memory": [
            {
                "layout": layout.label,
                "dtype": target.dtype,
                "backend": target.ours[0],
                "impl": target.ours[1],
                "kind": target.kind,
                "input_bytes": in_b,
                "output_bytes": out_b,
                "peak_extra_bytes": peak,
                "allowed_bytes": out_b + 0.01 * in_b,
                "fraction": peak / (out_b + in_b),
                "allowed_fraction": (out_b + 0.01 * in_b) / (out_b + in_b),
            }
        ],
    }


@pytest.mark.parametrize("met", [True, False])
def test_gpu_targets_on_synthetic_results(met: bool) -> None:
    """Each GPU target alone: met on the right side of its bound (10% inside
    it), not met 10% outside; memory: 1000 B of output, 1000 B of input, so at
    most 1010 B beyond what was there."""
    from softmax_xp._bench._report import GPU_TARGETS, evaluate_targets

    for t in GPU_TARGETS:
        if t.mode == "memory":
            peak = 1000.0 if met else 1011.0
            data = _gpu_result(t, 1e-3, 1e-3, peak)
            want, bound = peak / 2000, 1010 / 2000
        else:
            value = t.bound * (1.1 if met == (t.mode == "speedup") else 0.9)
            ours_s, ref_s = (
                (1e-3, 1e-3 * value) if t.mode == "speedup" else (1e-3 * value, 1e-3)
            )
            data = _gpu_result(t, ours_s, ref_s, 0)
            want, bound = value, t.bound
        [entry] = [e for e in evaluate_targets(data) if e["title"] == t.title]
        assert entry["value"] == pytest.approx(want), t.title
        assert entry["bound"] == pytest.approx(bound), t.title
        assert entry["met"] is met, t.title
        # the same in quick mode: a ratio, no verdict
        data["mode"] = "quick"
        [entry] = [e for e in evaluate_targets(data) if e["title"] == t.title]
        assert entry["value"] == pytest.approx(want), t.title
        assert entry["met"] is None


def test_gpu_targets_cover_the_issue() -> None:
    from softmax_xp._bench._cases import GPU_DTYPES, GPU_ROLES, GRAD
    from softmax_xp._bench._report import GPU_TARGETS, TARGETS, evaluate_targets

    assert len({t.title for t in GPU_TARGETS}) == len(GPU_TARGETS)
    have = {(t.case, t.dtype, t.kind, t.ours, t.ref[:2], t.mode, t.bound)
            for t in GPU_TARGETS}  # fmt: skip
    tc, torch = ("torch-cuda", "softmax_xp"), ("torch-cuda", "torch")
    for case in GPU_ROLES:
        for dtype in GPU_DTYPES:
            for kind in ("softmax", "log_softmax"):
                for k in (kind, kind + GRAD):
                    assert (case, dtype, k, tc, torch, "ratio", 1.0) in have
                    assert (case, dtype, k, tc, ("", ""), "memory", 0.0) in have
                copy = ("torch-cuda", "copy")
                assert (case, dtype, kind, tc, copy, "speedup", 0.8) in have
        cupyx = ("cupy", "cupyx.scipy.special")
        cp = ("cupy", "softmax_xp")
        assert (case, "float32", "softmax", cp, cupyx, "speedup", 3.0) in have
    assert ("tiny", "float32", "softmax", tc, torch, "ratio", 1.5) in have
    # a CPU run is judged on the CPU targets, a GPU run on the GPU ones
    cpu = evaluate_targets({"records": [], "config": {"backends": []}})
    assert [e["title"] for e in cpu] == [t.title for t in TARGETS]
    gpu = evaluate_targets({"records": [], "config": {"backends": [], "device": "gpu"}})
    assert [e["title"] for e in gpu] == [t.title for t in GPU_TARGETS]


def test_memory_lines_in_the_report() -> None:
    from softmax_xp._bench._report import _memory_lines

    peak = {"layout": "16384x32768", "dtype": "float32", "backend": "torch-cuda",
            "impl": "softmax_xp", "kind": "softmax", "input_bytes": 2**31,
            "output_bytes": 2**31, "peak_extra_bytes": 2**31,
            "allowed_bytes": 2**31 * 1.01, "fraction": 0.5,
            "allowed_fraction": 0.505}  # fmt: skip
    over = {**peak, "impl": "torch", "peak_extra_bytes": 2**32, "fraction": 1.0}
    lines = _memory_lines({"memory": [peak, over]})
    assert lines[1].startswith("peak device memory during one call")
    assert lines[2].endswith("0.500 of out+in  ok")
    assert lines[3].endswith("1.000 of out+in  OVER")
    assert _memory_lines({"memory": []}) == []


# --- the sync debug plugin ------------------------------------------------------


class _FakeCuda:
    def __init__(self) -> None:
        self.mode: int | str = 0
        self.seen: list[int | str] = []

    def get_sync_debug_mode(self) -> int | str:
        return self.mode

    def set_sync_debug_mode(self, mode: int | str) -> None:
        self.mode = mode


class _FakeTorch:
    def __init__(self) -> None:
        self.cuda = _FakeCuda()


def test_sync_debug_wraps_the_public_functions() -> None:
    import types

    import softmax_xp as sx
    from softmax_xp._bench import _sync_debug

    torch = _FakeTorch()
    module = types.SimpleNamespace()

    def make(name: str) -> Any:
        def f(x: Any, /, axis: int = -1) -> Any:
            torch.cuda.seen.append(torch.cuda.mode)
            if x == "boom":
                msg = "synchronizing"
                raise RuntimeError(msg)
            return (name, x, axis)

        return f

    for name in _sync_debug.PUBLIC:
        setattr(module, name, make(name))
    assert _sync_debug.install(module, torch) == list(_sync_debug.PUBLIC)
    assert _sync_debug.install(module, torch) == []  # never twice
    assert module.softmax(1, axis=0) == ("softmax", 1, 0)
    assert torch.cuda.seen == ["error"]
    assert torch.cuda.mode == 0  # restored after the call
    with pytest.raises(RuntimeError):
        module.logsumexp("boom")
    assert torch.cuda.mode == 0  # and after a raise
    assert inspect.signature(module.softmax) == inspect.signature(make("softmax"))
    # the real functions' names and signatures would survive it too
    assert all(callable(getattr(sx, n)) for n in _sync_debug.PUBLIC)


# --- benchmarks/gpu_check.sh ------------------------------------------------------


def _script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
        cwd=tmp_path,
    )


STEPS = ("env", "install", "tests-gpu", "tests-kernels", "bench")


@needs_script
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    proc = _script(tmp_path, "--dry-run", str(wheels), str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in STEPS:
        assert (out / f"{name}.log").is_file()
    summary = (out / "summary.txt").read_text()
    assert [ln.split()[:2] for ln in summary.splitlines()[: len(STEPS)]] == [
        [name, "ok"] for name in STEPS
    ]
    assert "all steps passed" in summary
    text = proc.stdout
    # offline installs: the wheels, then the project without its dependencies
    assert f"--no-index --find-links '{wheels}' '{wheels}'/*.whl" in text
    assert f"--no-deps '{ROOT}'" in text
    # the suite on the GPU backends, torch under sync debug mode
    tests = (out / "tests-gpu.log").read_text()
    assert "SOFTMAX_XP_BACKENDS=torch-cuda,cupy,jax-gpu" in tests
    assert "-p softmax_xp._bench._sync_debug" in tests
    kernels = (out / "tests-kernels.log").read_text()
    for f in ("test_gpu_triton.py", "test_gpu_cupy.py", "test_gpu_pallas.py"):
        assert f"--ignore tests/{f}" in tests
        assert f"tests/{f}" in kernels
    bench = (out / "bench.log").read_text()
    assert f"-m softmax_xp bench --device gpu --no-progress --out {out}/bench" in bench
    # the time limits add up to the 8 minutes at most
    limits = [int(ln.split()[3].rstrip("s")) for ln in text.splitlines()
              if ln.startswith("dry run: timeout")]  # fmt: skip
    assert len(limits) == len(STEPS)
    assert limits[-1] == 200


@needs_script
def test_gpu_check_keeps_going_and_fails_at_the_end(tmp_path: Path) -> None:
    """With a fake Python whose pytest fails: the bench still runs, the
    summary names both test steps, the status is 1."""
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    fake = tmp_path / "python"
    calls = tmp_path / "calls.txt"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'case "$*" in "-m pytest"*) echo "1 failed"; exit 1;; esac\n'
        "exit 0\n"
    )
    fake.chmod(0o755)
    proc = _script(tmp_path, str(wheels), str(out), PYTHON=str(fake))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (out / "summary.txt").read_text()
    status = {ln.split()[0]: ln for ln in summary.splitlines()}
    assert "failed (exit 1)" in status["tests-gpu"]
    assert "failed (exit 1)" in status["tests-kernels"]
    for name in ("install", "bench"):
        assert status[name].split()[1] == "ok", summary
    assert "FAILED: tests-gpu tests-kernels" in summary
    assert "1 failed" in (out / "tests-gpu.log").read_text()
    ran = calls.read_text()
    assert "-m softmax_xp bench --device gpu" in ran.splitlines()[-1]


@needs_script
def test_gpu_check_budget_and_usage(tmp_path: Path) -> None:
    wheels, out = tmp_path / "wheels", tmp_path / "out"
    wheels.mkdir()
    proc = _script(tmp_path, str(wheels), str(out), GPU_CHECK_BUDGET="0")
    assert proc.returncode == 1
    summary = (out / "summary.txt").read_text()
    assert summary.count("timed out") == len(STEPS)
    assert "budget of 0s used up" in (out / "bench.log").read_text()
    proc = _script(tmp_path, str(wheels))
    assert proc.returncode == 2
    assert "usage: benchmarks/gpu_check.sh" in proc.stderr
    proc = _script(tmp_path, str(tmp_path / "missing"), str(out))
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr
