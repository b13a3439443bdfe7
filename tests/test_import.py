"""Importing softmax-xp stays cheap: NumPy only, no optional backend pulled in.

The checks run in a fresh interpreter (``sys.modules`` of the test process is
full of backends already) with ``PYTHONPATH`` pointing at ``src/``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import needs
from packaging.version import InvalidVersion, Version

import softmax_xp as sx

SRC = Path(__file__).resolve().parents[1] / "src"
OPTIONAL_BACKENDS = ("torch", "jax", "jaxlib", "dask", "cupy", "array_api_strict")

# The child reports which optional backends are in sys.modules at each stage.
_PRELUDE = textwrap.dedent(
    f"""
    import json, sys
    OPTIONAL = {OPTIONAL_BACKENDS!r}
    stages = {{}}

    def loaded():
        return sorted(
            name for name in sys.modules if name.partition(".")[0] in OPTIONAL
        )
    """
)


def _run_child(body: str) -> dict[str, list[str]]:
    code = _PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(stages))\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(SRC)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_pulls_in_no_optional_backend() -> None:
    stages = _run_child(
        """
        stages["start"] = loaded()
        import softmax_xp
        stages["import"] = loaded()
        """
    )
    assert stages["start"] == []
    assert stages["import"] == []


def test_numpy_calls_pull_in_no_optional_backend() -> None:
    stages = _run_child(
        """
        import numpy as np
        import softmax_xp as sx

        x = np.array([[1.0, -np.inf, 3.0], [np.inf, 0.0, 2.0]])
        w = np.array([[True, True, False], [True, True, True]])
        sx.softmax(x)
        sx.log_softmax(x, axis=0, where=w)
        sx.softmin(x, temperature=2.0)
        sx.logsumexp(x)
        sx.logsumexp(x, axis=-1, b=np.ones(3), return_sign=True)
        sx.softmax([1.0, 2.0])
        sx.logsumexp(3.0)
        sx.softmax(x, xp=np)
        stages["calls"] = loaded()
        """
    )
    assert stages["calls"] == []


# each child imports a heavy backend: run it in that backend's session only
@pytest.mark.parametrize(
    ("backend", "setup"),
    [
        pytest.param(
            "torch",
            "import torch\nx = torch.tensor([[1.0, 2.0], [3.0, -4.0]])",
            marks=needs("torch"),
        ),
        pytest.param(
            "jax",
            "import jax.numpy as jnp\nx = jnp.asarray([[1.0, 2.0], [3.0, -4.0]])",
            marks=needs("jax"),
        ),
        pytest.param(
            "dask",
            "import dask.array as da\nx = da.ones((2, 2), chunks=1)",
            marks=needs("dask"),
        ),
        pytest.param(
            "array_api_strict",
            "import array_api_strict as xs\nx = xs.asarray([[1.0, 2.0], [3.0, -4.0]])",
            marks=needs("array_api_strict"),
        ),
    ],
)
def test_backend_calls_import_no_other_backend(backend: str, setup: str) -> None:
    """A call on one backend's array never imports another backend."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    stages = _run_child(
        setup
        + textwrap.dedent(
            """
            stages["backend"] = loaded()
            import softmax_xp as sx
            sx.softmax(x)
            sx.log_softmax(x, axis=0)
            sx.softmin(x)
            sx.logsumexp(x, axis=-1, return_sign=True)
            sx.logsumexp(x)
            stages["calls"] = loaded()
            """
        )
    )
    assert any(m.partition(".")[0] == backend for m in stages["backend"])
    before = {m.partition(".")[0] for m in stages["backend"]}
    after = {m.partition(".")[0] for m in stages["calls"]}
    assert after == before


def _pyproject_version_source() -> str:
    """The version string as hatch reads it (pyproject's [tool.hatch.version])."""
    pyproject = (SRC.parent / "pyproject.toml").read_text(encoding="utf-8")
    m = re.search(r'\[tool\.hatch\.version\]\s*path\s*=\s*"([^"]+)"', pyproject)
    assert m is not None, "pyproject.toml: [tool.hatch.version] path not found"
    text = (SRC.parent / m.group(1)).read_text(encoding="utf-8")
    v = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    assert v is not None, f"{m.group(1)}: no __version__ assignment"
    return v.group(1)


def test_version_is_a_pep440_string_from_the_hatch_source() -> None:
    assert isinstance(sx.__version__, str)
    try:
        parsed = Version(sx.__version__)
    except InvalidVersion:
        pytest.fail(f"__version__ {sx.__version__!r} is not a PEP 440 version")
    # normalised form: what the wheel's metadata will say
    assert str(parsed) == sx.__version__
    assert sx.__version__ == _pyproject_version_source()


def test_package_is_typed() -> None:
    marker = importlib.resources.files("softmax_xp").joinpath("py.typed")
    assert marker.is_file()


def test_public_names() -> None:
    assert set(sx.__all__) == {
        "__version__",
        "force_generic",
        "num_threads",
        "log_softmax",
        "logsumexp",
        "softmax",
        "softmin",
        # the streaming normaliser
        "LogSumExpState",
        "logsumexp_state",
        "logsumexp_combine",
        "logsumexp_finish",
        "softmax_from_state",
        "log_softmax_from_state",
    }
    for name in sx.__all__:
        assert hasattr(sx, name)
    for fn in (sx.softmax, sx.log_softmax, sx.softmin, sx.logsumexp):
        assert callable(fn)
