"""The README's code, run as written, so that it cannot drift from the package.

Every ``pycon`` block of README.md runs as a doctest in a fresh interpreter of
its own (as a reader would paste it: no test fixture, no ``jax_enable_x64``),
and its shown output is compared with what the block printed: numbers to 7
significant digits, the text around them exactly (white space aside). A
``python`` block marked ``<!-- test_readme: signatures ... -->`` lists
signatures, which must be softmax_xp's own; any other ``python`` block must
run without error. A block that imports a backend runs only where that backend
is installed (skipped, with the reason, elsewhere) and selected
(``SOFTMAX_XP_BACKENDS``). The README's links must resolve from a package
index's page too: absolute, or to a heading of the README itself.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import needs

import softmax_xp

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
SIGNATURES = "<!-- test_readme: signatures"
# top-level module -> the backend name SOFTMAX_XP_BACKENDS selects it by
BACKEND_OF = {"numpy": "numpy", "torch": "torch", "jax": "jax", "dask": "dask"}
BACKEND_OF |= {"cupy": "cupy", "array_api_strict": "array_api_strict"}


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    heading: str
    signatures: bool

    @property
    def name(self) -> str:
        return f"README.md:{self.line} ({self.heading})"


def _blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        headings = re.findall(r"^#+ (.+)$", before, re.MULTILINE)
        previous = before.rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append(
            Block(
                lang=match.group(1),
                code=match.group(2),
                line=before.count("\n") + 1,
                heading=headings[-1] if headings else "",
                signatures=previous.startswith(SIGNATURES),
            )
        )
    return blocks


BLOCKS = _blocks()
PYCON = [b for b in BLOCKS if b.lang == "pycon"]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def _source(block: Block) -> str:
    if block.lang != "pycon":
        return block.code
    examples = doctest.DocTestParser().get_examples(block.code)
    return "".join(e.source for e in examples)


def _imports(block: Block) -> list[str]:
    """The top-level modules the block imports, in order."""
    names: list[str] = []
    if block.signatures:  # not Python: name(x, /, axis=-1, *, ...) lines
        return names
    for node in ast.walk(ast.parse(_source(block))):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found = [node.module]
        else:
            continue
        names += [n.split(".")[0] for n in found if n.split(".")[0] not in names]
    return names


def _param(block: Block) -> object:
    """The block as a test parameter: needs its backends; skipped, with the
    reason, where a module it imports is not installed."""
    missing = [m for m in _imports(block) if importlib.util.find_spec(m) is None]
    if missing:
        why = f"{block.name} imports {', '.join(missing)}: not installed here"
        marks = [pytest.mark.skip(reason=why)]
    else:
        backends = {BACKEND_OF[m] for m in _imports(block) if m in BACKEND_OF}
        marks = [needs(b) for b in sorted(backends or {"numpy"})]
    return pytest.param(block, marks=marks, id=f"line{block.line}")


# Runs one pycon block (stdin) as a doctest; exit status 1 on a failure.
DRIVER = r'''
import doctest, math, re, sys

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


class Checker(doctest.OutputChecker):
    """Exact, or the same text with numbers equal to 7 significant digits."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        def skeleton(s):
            return " ".join(NUMBER.sub("#", s).split())
        if skeleton(want) != skeleton(got):
            return False
        pairs = zip(NUMBER.findall(want), NUMBER.findall(got))
        return all(
            math.isclose(float(w), float(g), rel_tol=1e-7, abs_tol=1e-300)
            for w, g in pairs
        )


name, line = sys.argv[1], int(sys.argv[2])
test = doctest.DocTestParser().get_doctest(sys.stdin.read(), {}, name, "README.md", line)
flags = doctest.NORMALIZE_WHITESPACE
runner = doctest.DocTestRunner(checker=Checker(), optionflags=flags)
runner.run(test)
sys.exit(1 if runner.failures else 0)
'''


def _run(block: Block, args: list[str]) -> subprocess.CompletedProcess[str]:
    # a fresh interpreter, as a reader's; the test session's own settings stay
    # (JAX's x64 switch too: a reader's JAX computes float32)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST_") and k != "JAX_ENABLE_X64"
    }
    return subprocess.run(
        [sys.executable, *args],
        input=block.code,
        capture_output=True,
        text=True,
        env=env,
        cwd=README.parent,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("block", [_param(b) for b in PYCON])
def test_readme_example(block: Block) -> None:
    """The block runs in a fresh interpreter and prints what the README shows."""
    done = _run(block, ["-c", DRIVER, block.name, str(block.line)])
    assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr}"


def _parameters(sig: inspect.Signature) -> list[tuple[str, object, object]]:
    """Names, kinds and defaults: what a signature block can show."""
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("block", [_param(b) for b in PYTHON])
def test_readme_python_block(block: Block) -> None:
    """A signature block lists softmax_xp's own signatures (``name(params)``,
    compared with softmax_xp.name's); any other block runs without error."""
    if not block.signatures:
        done = _run(block, ["-"])
        assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr}"
        return
    code = re.sub(r"#.*", "", block.code)
    calls = re.findall(r"^(\w+)\((.*?)\)\s*$", code, re.MULTILINE | re.DOTALL)
    assert calls, f"{block.name}: no signature found"
    for name, params in calls:
        namespace: dict[str, object] = {}
        exec(f"def {name}({params}): pass", namespace)  # noqa: S102
        shown = inspect.signature(namespace[name])
        real = inspect.signature(getattr(softmax_xp, name))
        assert _parameters(shown) == _parameters(real), (name, str(shown))


def test_readme_blocks_are_found() -> None:
    """The parser sees the README's blocks: a Quick start block per backend."""
    quick = [b for b in PYCON if b.heading == "Quick start"]
    assert [_imports(b)[0] for b in quick] == ["numpy", "torch", "jax", "dask"]
    assert sum(b.signatures for b in PYTHON) == 2


def _anchor(heading: str) -> str:
    """A heading's id as GitHub (and PyPI) make it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_resolve_from_an_index_page() -> None:
    """PyPI shows the README without the repository around it: links are
    absolute, or go to one of its own headings."""
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for url in links:
        if url.startswith("#"):
            assert url[1:] in anchors, url
        else:
            assert re.match(r"https?://", url), f"relative link {url!r}"
