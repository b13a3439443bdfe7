"""The ``softmax-xp`` command, run as ``python -m softmax_xp`` in a subprocess."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SELECTED

import softmax_xp

# The subprocess imports the very package this test process imports
# (the installed one under nox, src/ otherwise).
PACKAGE_PARENT = Path(softmax_xp.__file__).resolve().parents[1]
DEMO_BACKENDS = ("torch", "jax", "dask", "array_api_strict", "cupy")
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
