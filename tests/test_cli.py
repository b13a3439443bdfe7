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
    # a quick run judges no target: it says so once, and labels what it ran
    assert out.count("indicative") == 1, out
    assert "NOT MET" not in out
    assert "  NumPy softmax 8x128 float32 vs scipy (call overhead): ours/ref = " in out
    [target] = [t for t in data["targets"] if t.get("value") is not None]
    assert target["title"] == "NumPy softmax 8x128 float32 vs scipy (call overhead)"
    assert target["met"] is None
    assert target["judged"] is False
    assert "indicative" in target["note"]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    if importlib.util.find_spec("matplotlib") is None:
        assert pngs == []
        assert (
            "no PNG: matplotlib is not installed (pip install 'softmax-xp[cli]')\n"
            in out
        )
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


def _fake_tqdm(calls: list[tuple[Any, ...]]) -> Any:
    """A stand-in ``tqdm`` module whose bars record what they are told."""
    import importlib.machinery
    import types

    class Bar:
        def __init__(self, **kwargs: Any) -> None:
            self.n = 0
            calls.append(("new", kwargs))

        def set_postfix_str(self, text: str) -> None:
            calls.append(("postfix", text))

        def update(self, n: int) -> None:
            self.n += n
            calls.append(("update", n))

        def close(self) -> None:
            calls.append(("close",))

    module = types.ModuleType("tqdm")
    module.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)
    module.tqdm = Bar  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("installed", [True, False])
def test_bench_progress_tqdm(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    installed: bool,
) -> None:
    """Without rich, tqdm's bar: the real one where tqdm is installed (its bar
    on stderr), else a stand-in that records the calls."""
    from softmax_xp._cli import bench

    find_spec = importlib.util.find_spec
    if installed:
        if find_spec("tqdm") is None:
            pytest.skip("tqdm is not installed")
    else:
        calls: list[tuple[Any, ...]] = []
        monkeypatch.setitem(sys.modules, "tqdm", _fake_tqdm(calls))
    # rich hidden: progress_bar falls back to tqdm
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "rich" else find_spec(name, *a),
    )
    with bench.progress_bar(enabled=True) as bar:
        assert bar is not None
        bar(1, 3, "8x128 float32")
        bar(3, 3, "mlp float32")
    if installed:
        err = capsys.readouterr().err
        assert "bench" in err
        assert "3/3" in err
        assert "mlp float32" in err
    else:
        assert calls == [
            ("new", {"total": 3, "desc": "bench", "unit": "input"}),
            ("postfix", "8x128 float32"),
            ("update", 1),
            ("postfix", "mlp float32"),
            ("update", 2),
            ("close",),
        ]


def _bench_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[str, dict[str, Any]]:
    """``softmax-xp bench --quick --repeat 1 --no-plot`` with ``argv``: printed, JSON."""
    status, out = _main(
        [
            "bench",
            "--quick",
            "--repeat",
            "1",
            "--no-plot",
            "--no-progress",
            "--out",
            str(tmp_path),
            *argv,
        ],
        capsys,
    )
    assert status == 0, out
    [json_file] = tmp_path.glob("bench-quick-*.json")
    return out, json.loads(json_file.read_text())


def _records(data: dict[str, Any], **where: Any) -> list[dict[str, Any]]:
    return [r for r in data["records"] if all(r[k] == v for k, v in where.items())]


def _target(data: dict[str, Any], start: str) -> dict[str, Any]:
    [found] = [t for t in data["targets"] if t["title"].startswith(start)]
    return found


def test_bench_numpy_threads_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The large case runs ours twice, as called and on one thread; the small
    call runs once (serial anyway); the threads targets are measured."""
    pytest.importorskip("scipy.special")
    out, data = _bench_run(
        tmp_path,
        capsys,
        "--backends",
        "numpy",
        "--shapes",
        "512x512,8x128",
        "--dtypes",
        "float32",
    )
    large = _records(data, layout="512x512", backend="numpy")
    assert {(r["impl"], r["kind"]) for r in large if r["role"] != "floor"} == {
        (impl, kind)
        for impl in ("scipy.special", "softmax_xp", "softmax_xp 1 thread")
        for kind in ("softmax", "log_softmax", "logsumexp")
    }
    one = [r for r in large if r["impl"] == "softmax_xp 1 thread"]
    assert all(r["role"] == "variant" and r["check"]["ok"] for r in one)
    assert re.search(r"^  softmax +numpy \[1 thread\] .* ok$", out, re.MULTILINE)
    small = _records(data, layout="8x128", backend="numpy")
    assert "softmax_xp 1 thread" not in {r["impl"] for r in small}
    # the quick 512x512 stands for the 4096x4096 case: its targets are measured,
    # named with the shape run
    times = {r["impl"]: r["median_s"] for r in large if r["kind"] in ("softmax", None)}
    threads = _target(data, "NumPy softmax 512x512 float32: all threads vs 1 thread")
    assert threads["value"] == pytest.approx(
        times["softmax_xp 1 thread"] / times["softmax_xp"]
    )
    floor = _target(data, "NumPy softmax 512x512 float32 on 1 thread vs np.exp")
    assert floor["value"] == pytest.approx(
        times["softmax_xp 1 thread"] / times["np.exp"]
    )


@needs("dask")
def test_bench_dask_row_against_one_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dask without --backends numpy: our NumPy path still runs (both ways) as
    its reference, scipy does not; the threaded scheduler gets every CPU."""
    out, data = _bench_run(
        tmp_path,
        capsys,
        "--backends",
        "dask",
        "--shapes",
        "512x512",
        "--dtypes",
        "float32",
        "--kinds",
        "softmax",
    )
    dask = _records(data, backend="dask", kind="softmax")
    assert [r["peer"] for r in dask] == [["numpy", "softmax_xp 1 thread"]]
    assert dask[0]["check"]["ok"]
    impls = {r["impl"] for r in _records(data, backend="numpy")}
    assert impls == {"np.exp", "copy", "softmax_xp", "softmax_xp 1 thread"}
    assert data["backends"]["dask"]["num_workers"] == len(os.sched_getaffinity(0))
    assert "ours on numpy on 1 thread" in out
    new = _target(data, "Dask softmax 512x512 float32 in (64, 512) chunks, thr")
    old = _target(data, "Dask softmax 512x512 float32 in (64, 512) chunks vs")
    numpy = _records(data, backend="numpy", kind="softmax")
    times = {r["impl"]: r["median_s"] for r in numpy}
    assert new["value"] == pytest.approx(
        dask[0]["median_s"] / times["softmax_xp 1 thread"]
    )
    assert old["value"] == pytest.approx(dask[0]["median_s"] / times["softmax_xp"])


def _mlp_first_loss(batch: int = 0) -> float:
    """The MLP's loss on ``batch`` at the initial weights, by hand in float64."""
    from softmax_xp._bench._cases import MLP, mlp_problem

    rng = np.random.default_rng([0, *MLP.shape])  # the suite's input, seed 0
    problem = mlp_problem(rng.standard_normal(MLP.shape).astype(np.float32))
    w1, b1, w2, b2 = (w.astype(np.float64) for w in problem.weights)
    x = problem.batches[batch].astype(np.float64)
    z = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    picked = z[np.arange(len(z)), problem.labels[batch]]
    return float(np.mean(lse - picked))


def _mlp_steps(backend: str, impls: tuple[str, ...]) -> dict[str, list[float]]:
    """Two steps of each MLP candidate of ``backend``: the two losses."""
    import softmax_xp as sx
    from softmax_xp._bench._cases import MLP, make_backends

    rng = np.random.default_rng([0, *MLP.shape])
    x = rng.standard_normal(MLP.shape).astype(np.float32)
    ready, _ = make_backends([backend], sx, generic=False)
    [adapter] = [b for b in ready if b.name == backend]  # (and NumPy's floors)
    cands, _ = adapter.candidates(x, MLP, ("softmax", "log_softmax", "logsumexp"))
    assert {c.impl for c in cands} == set(impls)
    return {c.impl: [float(c.to_numpy(c.fn())) for _ in range(2)] for c in cands}


@needs("torch")
def test_bench_torch_small_calls_and_mlp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Forward and forward+backward rows on 8x128 (gradients checked against
    torch's), the MLP step with F.cross_entropy beside it, their targets."""
    out, data = _bench_run(
        tmp_path,
        capsys,
        "--backends",
        "torch",
        "--shapes",
        "8x128,mlp",
        "--dtypes",
        "float32,float64",
    )
    assert not data["errors"], data["errors"]
    for dtype in ("float32", "float64"):
        rows = _records(data, layout="8x128", dtype=dtype, backend="torch")
        got = {(r["impl"], r["kind"]) for r in rows}
        for kind in ("softmax fwd+bwd", "log_softmax fwd+bwd"):
            assert {("torch", kind), ("softmax_xp", kind)} <= got
        grads = [r for r in rows if r["kind"].endswith("fwd+bwd")]
        assert len(grads) == 4
        assert all(r["check"]["ok"] and r["median_s"] > 0 for r in grads)
    # the MLP runs in float32 only, three ways
    mlp = _records(data, layout="mlp")
    assert {(r["dtype"], r["impl"], r["role"]) for r in mlp} == {
        ("float32", "torch", "peer"),
        ("float32", "F.cross_entropy", "peer"),
        ("float32", "softmax_xp", "ours"),
    }
    assert all(r["check"]["ok"] for r in mlp)
    assert re.search(
        r"^  mlp step +torch .* step with F\.cross_entropy ", out, re.MULTILINE
    )
    assert re.search(r"^  log_softmax fwd\+bwd +torch .* ok$", out, re.MULTILINE)
    for title in (
        "torch softmax 8x128",
        "torch log_softmax 8x128",
        "torch softmax forward+backward 8x128",
        "torch log_softmax forward+backward 8x128",
        "torch MLP step",
    ):
        assert _target(data, title)["value"] is not None, title


@needs("torch")
def test_bench_torch_mlp_steps_agree_with_numpy() -> None:
    """Every torch MLP candidate starts from the same weights and batch (the
    first loss is the float64 one by hand) and takes the same SGD step."""
    steps = _mlp_steps("torch", ("torch", "F.cross_entropy", "softmax_xp"))
    want = _mlp_first_loss()
    for first, second in steps.values():
        assert first == pytest.approx(want, rel=1e-5)
        assert second == pytest.approx(steps["torch"][1], rel=1e-5)
    # the second step is another batch on updated weights
    assert steps["torch"][1] != pytest.approx(_mlp_first_loss(1), rel=1e-5)


@needs("torch")
def test_bench_torch_threads_per_case() -> None:
    """Small calls and the MLP on one torch thread, the rest at the default;
    --torch-threads sets every input."""
    import torch

    import softmax_xp as sx
    from softmax_xp._bench._cases import FULL_LAYOUTS, MLP, TorchBackend

    by_role = {layout.role: layout for layout in FULL_LAYOUTS}
    before = torch.get_num_threads()
    adapter = TorchBackend(sx, generic=False)
    try:
        assert adapter.probe() is None
        seen = []
        for layout in (by_role["tiny"], by_role["square"], MLP, by_role["small"]):
            adapter.enter(layout)
            seen.append(torch.get_num_threads())
        assert seen == [1, before, 1, 1]
        adapter.threads = 2
        for layout in (by_role["tiny"], by_role["square"]):
            adapter.enter(layout)
            assert torch.get_num_threads() == 2
        assert adapter.info()["num_threads_small_calls"] == 2
        adapter.leave()  # the run is over: the count it found
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@needs("jax")
def test_bench_jax_small_calls_and_mlp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """jit(grad(...)) of jax.nn's function against ours in jit, the eager
    small call against jit(jax.nn.softmax), the jitted MLP step."""
    out, data = _bench_run(
        tmp_path,
        capsys,
        "--backends",
        "jax",
        "--shapes",
        "8x128,mlp",
        "--dtypes",
        "float32",
    )
    assert not data["errors"], data["errors"]
    rows = _records(data, layout="8x128", backend="jax")
    got = {(r["impl"], r["role"], r["kind"]) for r in rows}
    for kind in ("softmax fwd+bwd", "log_softmax fwd+bwd"):
        assert ("jax.nn (jit)", "peer", kind) in got
        assert ("softmax_xp in jit", "variant", kind) in got
    assert ("softmax_xp", "ours", "softmax") in got
    assert all(r["check"]["ok"] for r in rows)
    mlp = _records(data, layout="mlp")
    assert {(r["impl"], r["role"]) for r in mlp} == {
        ("jax.nn (jit)", "peer"),
        ("softmax_xp in jit", "variant"),
    }
    assert "jit(grad(jax.nn.log_softmax))" in out
    assert _target(data, "JAX softmax 8x128")["value"] is not None


@needs("jax")
def test_bench_jax_mlp_steps_agree_with_numpy() -> None:
    steps = _mlp_steps("jax", ("jax.nn (jit)", "softmax_xp in jit"))
    want = _mlp_first_loss()
    for first, second in steps.values():
        assert first == pytest.approx(want, rel=1e-5)
        assert second == pytest.approx(steps["jax.nn (jit)"][1], rel=1e-5)


def test_bench_named_case_and_small_layouts() -> None:
    from softmax_xp._bench._cases import (
        FULL_LAYOUTS,
        MLP,
        QUICK_LAYOUTS,
        parse_layouts,
    )

    got = parse_layouts("8x128, 64x1024, MLP, 512x512", QUICK_LAYOUTS)
    assert [layout.role for layout in got] == ["tiny", "small", "mlp", "square"]
    assert got[2] is MLP
    assert MLP.label == "mlp"
    assert MLP.dtypes == ("float32",)
    # the full run holds every case; quick scales only the large ones
    assert [layout.role for layout in FULL_LAYOUTS] == [
        layout.role for layout in QUICK_LAYOUTS
    ]
    for full, quick in zip(FULL_LAYOUTS, QUICK_LAYOUTS, strict=True):
        same = full.role in {"tiny", "small", "mlp"}
        assert (full == quick) is same, full
    with pytest.raises(ValueError, match="or mlp"):
        parse_layouts("mlp2", FULL_LAYOUTS)


def _synthetic(target: Any, ours_s: float, ref_s: float) -> dict[str, Any]:
    """A run holding just the two records ``target`` compares."""
    from softmax_xp._bench._cases import FULL_LAYOUTS

    [layout] = [layout for layout in FULL_LAYOUTS if layout.role == target.case]

    def record(backend: str, impl: str, kind: str | None, t: float) -> dict[str, Any]:
        return {
            "layout": layout.label,
            "case": layout.role,
            "dtype": target.dtype,
            "backend": backend,
            "impl": impl,
            "kind": kind,
            "median_s": t,
        }

    ref_kind = None if target.ref[2] else target.kind
    return {
        "config": {"backends": []},
        "records": [
            record(*target.ours, target.kind, ours_s),
            record(target.ref[0], target.ref[1], ref_kind, ref_s),
        ],
    }


def test_bench_quick_targets_name_the_shapes_run_and_judge_nothing() -> None:
    """A quick run's targets carry the shapes it ran (512x512, not 4096x4096;
    Dask's chunks of that input) and no verdict, only the ratio."""
    from softmax_xp._bench._cases import FULL_LAYOUTS, QUICK_LAYOUTS
    from softmax_xp._bench._report import TARGETS, evaluate_targets

    quick = {layout.role: layout for layout in QUICK_LAYOUTS}
    for t in TARGETS:
        data = _synthetic(t, 1e-3, 2e-3)
        layout = quick[t.case]
        for r in data["records"]:
            r.update(layout=layout.label, shape=list(layout.shape))
        data["mode"] = "quick"
        [entry] = [e for e in evaluate_targets(data) if e["value"] is not None]
        assert entry["met"] is None, entry
        assert entry["judged"] is False
        assert "4096x4096" not in entry["title"]
        assert "1000000" not in entry["title"]
        full = next(k for k in FULL_LAYOUTS if k.role == t.case)
        assert entry["title"] == t.title.replace(
            "x".join(map(str, full.shape)), "x".join(map(str, layout.shape))
        ).replace("(512, 4096)", "(64, 512)")
        # the same records in a full run: judged
        data["mode"] = "full"
        [entry] = [e for e in evaluate_targets(data) if e["value"] is not None]
        assert entry["judged"] is True
        assert entry["met"] is not None
    dask = next(t for t in TARGETS if t.title.startswith("Dask"))
    assert "4096x4096 float32 in (512, 4096) chunks" in dask.title
    assert "512x512 float32 in (64, 512) chunks" in dask.title_for((512, 512))


def test_bench_targets_cover_the_issue() -> None:
    """Every target names a case the suite runs and a row it builds; the new
    round's bounds are there (a typo would leave a target n/a forever)."""
    from softmax_xp._bench._cases import FULL_LAYOUTS, GRAD, KINDS, MLP_KIND
    from softmax_xp._bench._report import TARGETS

    roles = {layout.role for layout in FULL_LAYOUTS}
    kinds = {*KINDS, *(k + GRAD for k in KINDS), MLP_KIND}
    impls = {
        "softmax_xp",
        "softmax_xp 1 thread",
        "scipy.special",
        "np.exp",
        "torch",
        "jax.nn (jit)",
    }
    assert len({t.title for t in TARGETS}) == len(TARGETS)
    for t in TARGETS:
        assert t.case in roles, t
        assert t.kind in kinds, t
        assert t.ours[1] in impls, t
        assert t.ref[1] in impls, t
    bounds = {t.title: (t.mode, t.bound) for t in TARGETS}
    for title, want in {
        "torch softmax 8x128 float32 vs torch.softmax": ("ratio", 3.0),
        "torch log_softmax forward+backward 8x128 float32 vs torch.log_softmax": (
            "ratio",
            3.0,
        ),
        "JAX softmax 8x128 float32 (called eagerly) vs jit(jax.nn.softmax)": (
            "ratio",
            1.3,
        ),
        "JAX logsumexp 4096x4096 float32 vs jit(jax.nn.logsumexp)": ("ratio", 1.1),
        "NumPy softmax 1000000x64 float32 vs scipy": ("speedup", 1.7),
        "NumPy softmax 4096x4096 float32: all threads vs 1 thread": ("speedup", 1.5),
    }.items():
        assert bounds[title] == want


@pytest.mark.parametrize("met", [True, False])
def test_bench_targets_on_synthetic_records(met: bool) -> None:
    """Each target alone: the ratio of its two medians, met on the right side
    of the bound (ours 10% inside it, or 10% outside)."""
    from softmax_xp._bench._report import TARGETS, evaluate_targets

    for t in TARGETS:
        # the value the target should read: 10% better or worse than the bound
        value = t.bound * (1.1 if met == (t.mode == "speedup") else 0.9)
        ours_s, ref_s = (
            (1e-3, 1e-3 * value)
            if t.mode == "speedup"
            else (
                1e-3 * value,
                1e-3,
            )
        )
        [entry] = [e for e in evaluate_targets(_synthetic(t, ours_s, ref_s))
                   if e["title"] == t.title]  # fmt: skip
        assert entry["value"] == pytest.approx(value), t.title
        assert entry["met"] is met, t.title


def test_bench_report_shows_a_peer_beside_and_the_case() -> None:
    """F.cross_entropy is nobody's peer: it gets a row against ours; the MLP's
    header says what it is instead of a size."""
    from softmax_xp._bench._report import format_report, table_rows

    common = {"layout": "mlp", "dtype": "float32", "nbytes": 4, "floor": "numpy"}
    common["about"] = "MLP 32-64-10"
    common["kind"] = "mlp step"
    records = [
        {**common, "backend": "torch", "impl": "torch", "role": "peer",
         "median_s": 2e-4, "call": "step with torch.log_softmax", "peer": None},
        {**common, "backend": "torch", "impl": "F.cross_entropy", "role": "peer",
         "median_s": 1e-4, "call": "step with F.cross_entropy", "peer": None},
        {**common, "backend": "torch", "impl": "softmax_xp", "role": "ours",
         "median_s": 3e-4, "label": "torch", "peer": ["torch", "torch"],
         "check": {"ok": True}},
    ]  # fmt: skip
    result = {"records": records, "mode": "full", "targets": []}
    rows = table_rows(result)
    assert [(r["peer"], r["ours_over_peer"]) for r in rows] == [
        ("step with torch.log_softmax", pytest.approx(1.5)),
        ("step with F.cross_entropy", pytest.approx(3.0)),
    ]
    result.update(
        date="d",
        machine={"cpu_model": "cpu", "cpus_usable": 2, "cpu_count": 2, "python": "3"},
        duration_s=1.0,
        loadavg_start=None,
        loadavg_end=None,
    )
    text = format_report(result)
    assert "mlp float32 (MLP 32-64-10)\n" in text
    assert "floors:" not in text


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
