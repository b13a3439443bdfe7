"""The ``softmax-xp`` command, run as ``python -m softmax_xp`` in a subprocess."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SELECTED, needs

import softmax_xp
from softmax_xp._backends import BACKENDS

# The subprocess imports the very package this test process imports
# (the installed one under nox, src/ otherwise).
PACKAGE_PARENT = Path(softmax_xp.__file__).resolve().parents[1]
# the demo shows NumPy first, then a line per other backend of the registry
DEMO_BACKENDS = tuple(b.name for b in BACKENDS if b.name != "numpy")
EPS64 = float(np.finfo(np.float64).eps)
TIMEOUT = 300  # the demo imports torch and jax: seconds, not minutes


def _run(
    *args: str, pythonpath: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    paths = [str(p) for p in (*pythonpath, PACKAGE_PARENT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def _softmax_f64(values: list[float]) -> list[float]:
    """softmax by hand, in Python floats (IEEE float64)."""
    m = max(values)
    e = [math.exp(v - m) for v in values]
    s = math.fsum(e)
    return [v / s for v in e]


_NUMBER = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:e[-+]?\d+)?|nan"


def _numbers(text: str) -> list[str]:
    return re.findall(_NUMBER, text)


def _assert_printed(tokens: list[str], expected: list[float], eps: float) -> None:
    """Each printed number is ``expected`` up to NumPy's printing precision.

    NumPy prints at most 8 digits after the point (of the mantissa, in
    scientific notation), dropping digits only where fewer still identify the
    value: a token is within half of 1e-8 (times its power of ten) of the
    value, and the value within a few ``eps`` (its dtype's) of the exact result.
    """
    assert len(tokens) == len(expected), (tokens, expected)
    for token, want in zip(tokens, expected, strict=True):
        exponent = int(token.partition("e")[2] or 0)
        tol = 0.5 * 10.0 ** (exponent - 8) + 5 * eps * abs(want)
        assert abs(float(token) - want) <= tol, (token, want, tol)


def _line(out: str, start: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith(start)]
    assert len(lines) == 1, f"expected one line starting {start!r} in:\n{out}"
    return lines[0]


def _after_arrow(line: str) -> list[str]:
    return _numbers(line.split("->", 1)[1].split("(", 1)[0])


@pytest.fixture(scope="module")
def demo() -> subprocess.CompletedProcess[str]:
    return _run("-m", "softmax_xp", "demo")


def test_demo_exits_zero(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stdout + demo.stderr


@pytest.mark.parametrize("values", [[0.3, 2.9, 4.0], [1010.0, 1000.0, 990.0]])
def test_demo_prints_stable_softmax(
    demo: subprocess.CompletedProcess[str], values: list[float]
) -> None:
    got = _after_arrow(_line(demo.stdout, f"softmax({values})"))
    _assert_printed(got, _softmax_f64(values), EPS64)


def test_demo_prints_seed_numbers(demo: subprocess.CompletedProcess[str]) -> None:
    """The seed's two worked examples, digit for digit as NumPy prints them."""
    assert "[0.01821127 0.24519181 0.73659691]" in demo.stdout
    assert "[9.99954600e-01 4.53978686e-05 2.06106005e-09]" in demo.stdout


def test_demo_shows_naive_formula_overflowing(
    demo: subprocess.CompletedProcess[str],
) -> None:
    line = _line(demo.stdout, "naive exp(x) / sum exp(x)")
    assert _after_arrow(line) == ["nan"] * 3, line
    # NumPy's overflow warnings are silenced, not printed
    assert "RuntimeWarning" not in demo.stderr


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("softmax([inf, 1.0])", [1.0, 0.0]),
        ("softmax([-inf, -inf])", [0.0, 0.0]),
        ("softmax([1.0, 2.0], where=[False, False])", [0.0, 0.0]),
        ("logsumexp([0.0, -40.0])", [math.log1p(math.exp(-40.0))]),
    ],
)
def test_demo_prints_special_values(
    demo: subprocess.CompletedProcess[str], start: str, expected: list[float]
) -> None:
    _assert_printed(_after_arrow(_line(demo.stdout, start)), expected, EPS64)


@pytest.mark.parametrize("name", DEMO_BACKENDS)
def test_demo_reports_every_backend(
    demo: subprocess.CompletedProcess[str], name: str
) -> None:
    line = _line(demo.stdout, f"{name} ")
    if name in SELECTED and name != "cupy":
        # a backend under test here must compute, and agree with float64 math
        assert "failed" not in line, line
        assert "not installed" not in line, line
        dtype = line.split()[2]  # name, version, dtype, [values]
        values = _numbers(line.split("[", 1)[1].split("]", 1)[0])
        eps = float(np.finfo(dtype).eps)
        _assert_printed(values, _softmax_f64([1010.0, 1000.0, 990.0]), eps)
    else:
        assert re.search(r"not installed|failed|max rel\. error", line), line


def test_demo_survives_a_broken_backend(tmp_path: Path) -> None:
    """A backend that is found but fails to import is reported; the demo goes on."""
    for name in ("cupy", "dask"):
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(
            f"raise ImportError('{name} is broken here')\n"
        )
    proc = _run("-m", "softmax_xp", "demo", pythonpath=(tmp_path,))
    assert proc.returncode == 0, proc.stderr
    for name in ("cupy", "dask"):
        line = _line(proc.stdout, f"{name} ")
        assert "import failed" in line, line
        assert f"{name} is broken here" in line, line
    assert "[9.99954600e-01 4.53978686e-05 2.06106005e-09]" in proc.stdout


def test_help_lists_demo() -> None:
    proc = _run("-m", "softmax_xp", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: softmax-xp" in proc.stdout
    assert "demo" in proc.stdout


def test_demo_help() -> None:
    proc = _run("-m", "softmax_xp", "demo", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: softmax-xp demo" in proc.stdout


def test_version() -> None:
    proc = _run("-m", "softmax_xp", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"softmax-xp {softmax_xp.__version__}"


def test_unknown_subcommand_fails_clearly() -> None:
    proc = _run("-m", "softmax_xp", "frobnicate")
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "demo" in proc.stderr  # the valid choices are listed
    assert "Traceback" not in proc.stderr


def test_missing_subcommand_fails_clearly() -> None:
    proc = _run("-m", "softmax_xp")
    assert proc.returncode == 2
    assert "usage: softmax-xp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_imports_no_backend() -> None:
    """Importing the package and its command module pulls in no optional backend."""
    code = (
        "import sys, softmax_xp, softmax_xp.__main__\n"
        "softmax_xp.__main__.build_parser()\n"
        "heavy = ('torch', 'jax', 'jaxlib', 'dask', 'cupy', 'array_api_strict')\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in heavy))\n"
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_main_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """``main`` returns the status for the console script instead of exiting."""
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


# --- info -----------------------------------------------------------------

# the backends `info` and `check` know that run on the CPU, as conftest names them
CHECK_BACKENDS = tuple(b.name for b in BACKENDS if not b.gpu)
INFO_NAMES = {b.name: b.dist or b.name for b in BACKENDS}  # -> what info prints


@pytest.fixture(scope="module")
def info_json() -> dict[str, Any]:
    proc = _run("-m", "softmax_xp", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module")
def info_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``info`` with a cupy on the path that fails to import."""
    folder = tmp_path_factory.mktemp("broken")
    _broken(folder, "cupy")
    proc = _run("-m", "softmax_xp", "info", pythonpath=(folder,))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stdout


def test_info_text(info_text: str) -> None:
    assert f"softmax-xp {softmax_xp.__version__}" in info_text
    for name in ("numpy", "array-api-compat", "scipy", "torch", "jax", "dask"):
        assert _line(info_text, f"{name} ")
    for name in ("cupy", "array-api-strict", "ml_dtypes"):
        assert _line(info_text, f"{name} ")
    numpy_line = _line(info_text, "numpy ").split()
    # tests-generic runs everything with the fast paths switched off
    path = "generic" if os.environ.get("SOFTMAX_XP_FORCE_GENERIC") == "1" else "fast"
    assert numpy_line == ["numpy", np.__version__, path, "cpu"], numpy_line


def test_info_reports_a_broken_backend(info_text: str) -> None:
    line = _line(info_text, "cupy ")
    assert "import failed" in line, line
    assert "cupy is broken here" in line, line


def test_info_json_lists_every_library(info_json: dict[str, Any]) -> None:
    names = [e["name"] for e in info_json["libraries"]]
    assert names == [
        "numpy",
        "array-api-compat",
        "scipy",
        "array-api-strict",
        "torch",
        "jax",
        "dask",
        "cupy",
        "ml_dtypes",
    ]
    assert info_json["softmax_xp"]["version"] == softmax_xp.__version__


@pytest.mark.parametrize(
    "name", [pytest.param(b, marks=needs(b)) for b in CHECK_BACKENDS]
)
def test_info_reports_selected_backend(info_json: dict[str, Any], name: str) -> None:
    entry = next(e for e in info_json["libraries"] if e["name"] == INFO_NAMES[name])
    assert entry["status"] == "ok", entry
    assert entry["version"]
    assert entry["devices"], entry
    # array-api-strict has no fast path (fast paths: numpy, torch, jax, dask);
    # the others take theirs unless forced off
    flag = info_json["softmax_xp"]["SOFTMAX_XP_FORCE_GENERIC"] or ""
    forced = flag.strip().lower() in {"1", "true", "yes", "on"}
    want = "generic" if name == "array_api_strict" or forced else "fast"
    assert entry["path"] == want, entry
    assert name in info_json["backends"]


@needs("torch")
def test_info_torch_sees_cpu(info_json: dict[str, Any]) -> None:
    entry = next(e for e in info_json["libraries"] if e["name"] == "torch")
    assert entry["devices"][0] == "cpu"


@needs("jax")
def test_info_jax_devices_are_jax_devices(info_json: dict[str, Any]) -> None:
    import jax

    entry = next(e for e in info_json["libraries"] if e["name"] == "jax")
    for d in jax.devices():
        assert f"{d.platform}:{d.id}" in entry["devices"]


def _broken(folder: Path, name: str) -> None:
    pkg = folder / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"raise ImportError('{name} is broken here')\n")


# --- check ----------------------------------------------------------------


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from softmax_xp.__main__ import main

    status = main(argv)
    return status, capsys.readouterr().out


def _selected_check_backends() -> list[str]:
    return [b for b in CHECK_BACKENDS if b in SELECTED]


def test_check_passes_on_selected_backends(capsys: pytest.CaptureFixture[str]) -> None:
    from softmax_xp._cli.check import CHECKS

    backends = _selected_check_backends()
    status, out = _main(["check", "--backends", ",".join(backends)], capsys)
    assert status == 0, out
    assert "FAIL" not in out, out
    assert re.search(r"^summary: OK: \d+ passed, 0 failed", out, re.MULTILINE), out
    for name in backends:
        assert re.search(rf"^{name} \(", out, re.MULTILINE), (name, out)
    # every check ran (or was skipped with a reason) on every device
    rows = [ln for ln in out.splitlines() if ln.startswith(("  PASS", "  SKIP"))]
    assert len(rows) >= len(CHECKS) * len(backends)
    for c in CHECKS:
        assert c.name in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    from softmax_xp._cli.check import CHECKS

    status, out = _main(["check", "--backends", "numpy", "--json"], capsys)
    assert status == 0
    data = json.loads(out)
    assert data["summary"]["failed"] == 0
    assert data["summary"]["passed"] == len(CHECKS)  # numpy has every dtype
    assert {r["status"] for r in data["results"]} == {"pass"}
    assert {(r["check"], r["dtype"]) for r in data["results"]} == {
        (c.name, c.dtype) for c in CHECKS
    }


def test_check_fails_on_a_wrong_softmax(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A softmax that is off by one part in 1e6 fails the accuracy check, exit 1."""
    real = softmax_xp.softmax

    def off(x: Any, *args: Any, **kwargs: Any) -> Any:
        return real(x, *args, **kwargs) * (1 + 1e-6)

    monkeypatch.setattr(softmax_xp, "softmax", off)
    status, out = _main(["check", "--backends", "numpy"], capsys)
    assert status == 1
    assert re.search(
        r"^  FAIL  accuracy: softmax +float64 +softmax\[", out, re.MULTILINE
    ), out
    assert re.search(r"^  FAIL  contract: finite with -inf", out, re.MULTILINE), out
    # softmin is its own function: unaffected
    assert re.search(r"^  PASS  accuracy: softmin +float64", out, re.MULTILINE), out
    assert re.search(
        r"^summary: FAILED: \d+ passed, [1-9]\d* failed", out, re.MULTILINE
    )


def test_check_fails_on_a_nan_and_on_a_raise(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = softmax_xp.log_softmax

    def nan_for_minus_inf(x: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(x, *args, **kwargs)
        return np.where(np.isneginf(out), np.nan, out)

    def broken(*args: Any, **kwargs: Any) -> Any:
        msg = "logsumexp is broken here"
        raise RuntimeError(msg)

    monkeypatch.setattr(softmax_xp, "log_softmax", nan_for_minus_inf)
    monkeypatch.setattr(softmax_xp, "logsumexp", broken)
    status, out = _main(["check", "--backends", "numpy", "--json"], capsys)
    assert status == 1
    data = json.loads(out)
    by_check = {(r["check"], r["dtype"]): r for r in data["results"]}
    allneg = by_check["contract: all -inf", "float64"]
    assert allneg["status"] == "FAIL"
    assert allneg["detail"].startswith("log_softmax[0] = nan"), allneg
    lse = by_check["accuracy: logsumexp", "float32"]
    assert lse["status"] == "FAIL"
    assert "RuntimeError: logsumexp is broken here" in lse["detail"]
    assert by_check["accuracy: softmax", "float32"]["status"] == "pass"


@needs("array_api_strict")
def test_check_skips_a_missing_dtype(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = _main(["check", "--backends", "array_api_strict"], capsys)
    assert status == 0, out
    line = _line(out, "SKIP  float16 row of 70,000 zeros")
    assert "has no float16" in line


def test_check_skips_a_broken_backend(tmp_path: Path) -> None:
    _broken(tmp_path, "cupy")
    proc = _run(
        "-m", "softmax_xp", "check", "--backends", "numpy,cupy", pythonpath=(tmp_path,)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = _line(proc.stdout, "cupy:")
    assert "SKIP" in line, line
    assert "cupy is broken here" in line, line


def test_check_bad_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["check", "--backends", "numpy,tensorflow"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --backends" in err
    assert "tensorflow" in err


# --- bench ----------------------------------------------------------------


def _bench_argv(out: Path, *extra: str) -> list[str]:
    return [
        "bench",
        "--quick",
        "--backends",
        "numpy",
        "--shapes",
        "8x128",
        "--dtypes",
        "float32",
        "--repeat",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def test_bench_quick(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from softmax_xp._cli import bench

    pytest.importorskip("scipy.special")  # the suite checks our results against it
    calls: list[tuple[int, int, str]] = []

    @contextlib.contextmanager
    def recorder(enabled: bool) -> Any:
        assert enabled
        yield lambda *a: calls.append(a)

    monkeypatch.setattr(bench, "progress_bar", recorder)
    status, out = _main(_bench_argv(tmp_path), capsys)
    assert status == 0, out
    assert calls == [(1, 1, "8x128 float32")]
    # the ratio table: one row per kind, checked against scipy or our NumPy
    for kind in ("softmax", "log_softmax", "logsumexp"):
        assert re.search(rf"^  {kind} +numpy .* ok$", out, re.MULTILINE), out
    [json_file] = tmp_path.glob("bench-quick-*.json")
    data = json.loads(json_file.read_text())
    ours = [r for r in data["records"] if r["role"] == "ours"]
    assert {r["kind"] for r in ours} == {"softmax", "log_softmax", "logsumexp"}
    assert all(r["shape"] == [8, 128] and r["median_s"] > 0 for r in ours)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert pngs == []
        assert "matplotlib is not importable" in out
    else:
        stem = json_file.stem
        assert pngs == [f"{stem}-scaling.png", f"{stem}.png"]
        for p in tmp_path.glob("*.png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--backends", "numpy,tensorflow", "argument --backends: tensorflow"),
        ("--dtypes", "float8", "argument --dtypes: float8"),
        ("--kinds", "softplus", "argument --kinds: softplus"),
        ("--shapes", "12xab", "--shapes: '12xab' is not ROWSxCOLS"),
        ("--device", "tpu", "argument --device: invalid choice: 'tpu'"),
    ],
)
def test_bench_bad_options(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([*_bench_argv(tmp_path), option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: softmax-xp bench" in err
    assert message in err, err
    assert not list(tmp_path.iterdir())  # nothing ran


def test_bench_device_with_no_backend_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([*_bench_argv(tmp_path), "--device", "gpu"])
    assert info.value.code == 2
    assert "--device gpu: none of --backends numpy runs there" in (
        capsys.readouterr().err
    )


def test_bench_progress_fallback() -> None:
    """Without rich and tqdm (or with --no-progress) there is no bar object."""
    from softmax_xp._cli.bench import progress_bar

    with progress_bar(enabled=False) as bar:
        assert bar is None


@pytest.mark.skipif(
    importlib.util.find_spec("rich") is None, reason="rich is not installed"
)
def test_bench_progress_rich() -> None:
    from softmax_xp._cli.bench import progress_bar

    with progress_bar(enabled=True) as bar:
        assert bar is not None
        bar(1, 2, "a")
        bar(2, 2, "b")


BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.mark.skipif(not BENCH_SCRIPT.is_file(), reason="not a source checkout")
def test_benchmarks_run_py_still_works() -> None:
    proc = _run(str(BENCH_SCRIPT), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: benchmarks/run.py" in proc.stdout
    assert "benchmarks/results" in proc.stdout  # its own default output folder


# --- help -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "check", "bench", "demo"])
def test_subcommand_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: softmax-xp {command}")
    assert len(out.splitlines()) > 4  # a description, not just the usage


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from softmax_xp.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("info", "check", "bench", "demo"):
        assert re.search(rf"^    {command} ", out, re.MULTILINE), out


# --- demo: the special cases beside the peers --------------------------------


def _case_block(out: str, title: str) -> list[str]:
    """The lines under ``case: <title>`` up to the next case or the end."""
    lines = out.splitlines()
    start = lines.index(f"  case: {title}")
    block = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("    "):
            break
        block.append(ln.strip())
    return block


@pytest.mark.parametrize(
    ("title", "ours"),
    [
        ("softmax([-inf, -inf])", "[0. 0.]"),
        ("softmax([inf, 1.0])", "[1. 0.]"),
        ("softmax([1.0, 2.0]) with every entry masked", "[0. 0.]"),
        (
            "softmax of 70,000 float16 zeros (1/70,000 = 1.429e-05)",
            # 1/70000 rounded once to float16, summed in float64
            (
                f"float16: all {float(np.float16(1 / 70_000)):.4g}, "
                f"sum {70_000 * float(np.float16(1 / 70_000)):.4g}"
            ),
        ),
    ],
)
def test_demo_special_cases_beside_peers(
    demo: subprocess.CompletedProcess[str], title: str, ours: str
) -> None:
    block = _case_block(demo.stdout, title)
    assert block[0].split(None, 1) == ["softmax-xp", ours], block
    peers = {ln.split()[0]: ln for ln in block[1:]}
    for module, label in (
        ("scipy", "scipy.special.softmax"),
        ("torch", "torch.softmax"),
        ("jax", "jax.nn.softmax"),
    ):
        # each installed peer is run and shown (what it returns is its business)
        assert (label in peers) == (importlib.util.find_spec(module) is not None)
        if label in peers:
            assert "raised" not in peers[label], peers[label]
    assert "RuntimeWarning" not in demo.stderr
