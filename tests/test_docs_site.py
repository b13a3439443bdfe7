"""The documentation site's generators and its browser check.

The tables that docs/_ext/softmax_docs.py generates are checked on made-up
JUnit reports and benchmark JSON whose counts and ratios are known by
construction; docs/check_site.py is run in headless Chromium on tiny sites: a
sound one that must pass, and ones with broken links, raw TeX, a script from the
network or a table cell's code broken over lines, which it must report. Tests skip where
Sphinx or Chromium is missing (the test sessions do not install them; the
``docs`` nox session builds the real site and runs the real check).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import needs

import softmax_xp

pytestmark = needs("numpy")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _module(name: str, folder: Path):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


@pytest.fixture
def generators():
    pytest.importorskip("sphinx")
    return _module("softmax_docs", DOCS / "_ext")


def _case(module: str, name: str, outcome: str) -> str:
    body = {
        "passed": "",
        "failed": '<failure message="boom">trace</failure>',
        "skipped": '<skipped message="no gpu">why</skipped>',
    }[outcome]
    return f'<testcase classname="tests.{module}" name="{name}" time="0.1">{body}</testcase>'


def _report(path: Path, session: str, cases: list[tuple[str, str, str]]) -> None:
    body = "".join(_case(*c) for c in cases)
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        f'<testsuite name="{session}" tests="{len(cases)}" '
        'timestamp="2026-11-26T17:50:34.354825+00:00" hostname="vm">'
        f"{body}</testsuite></testsuites>",
        encoding="utf-8",
    )


def test_support_matrix_counts_each_outcome(generators, tmp_path, monkeypatch):
    _report(
        tmp_path / "tests-numpy.xml",
        "tests-numpy",
        [
            ("test_contract", "a", "passed"),
            ("test_contract", "b", "passed"),
            ("test_contract", "c", "failed"),
            ("test_lazy", "d", "skipped"),
        ],
    )
    _report(tmp_path / "tests-jax.xml", "tests-jax", [("test_lazy", "d", "passed")])
    monkeypatch.setenv("SOFTMAX_XP_DOCS_REPORTS", str(tmp_path))
    text = generators.support_matrix()
    assert "| `tests-numpy` | numpy | 2 | 1 | 1 | 2026-11-26 17:50 |" in text
    assert "| `tests-jax` | jax (CPU) | 1 | 0 | 0 |" in text
    # per module, sessions in file-name order (tests-jax, tests-numpy)
    assert "| `test_contract` | \N{EN DASH} | 2 / 1 / 0 |" in text
    assert "| `test_lazy` | 1 / 0 / 0 | 0 / 0 / 1 |" in text
    assert "No report for:" in text
    assert "`tests-strict`" in text


def test_support_matrix_without_reports_says_so(generators, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTMAX_XP_DOCS_REPORTS", str(tmp_path / "absent"))
    text = generators.support_matrix()
    assert "No test reports were found" in text
    assert "| session |" not in text


def test_bench_tables_ratios(generators, tmp_path, monkeypatch):
    common = {"layout": "8x128", "shape": [8, 128], "axis": -1, "dtype": "float32"}
    records = [
        {**common, "backend": "numpy", "impl": "np.exp", "role": "floor",
         "kind": None, "median_s": 0.001},
        {**common, "backend": "numpy", "impl": "scipy.special", "role": "peer",
         "kind": "softmax", "median_s": 0.004},
        {**common, "backend": "numpy", "impl": "softmax_xp", "role": "ours",
         "kind": "softmax", "label": "numpy", "peer": ["numpy", "scipy.special"],
         "floor": "numpy", "median_s": 0.002, "check": {"ok": True}},
    ]  # fmt: skip
    run = {"mode": "quick", "date": "2026-11-26", "machine": {"cpu_model": "cpu X"}}
    path = tmp_path / "bench-quick-1.json"
    path.write_text(json.dumps({**run, "records": records}), encoding="utf-8")
    monkeypatch.setenv("SOFTMAX_XP_DOCS_BENCH", str(path))
    text = generators.bench_tables()
    assert "cpu X" in text
    row = "| softmax | numpy | 2 ms | numpy scipy.special | 4 ms | 0.50 | 2.00 | ok |"
    assert row in text


def test_bench_tables_without_results_say_so(generators, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTMAX_XP_DOCS_BENCH", str(tmp_path / "none.json"))
    assert "No benchmark results were found" in generators.bench_tables()


# --- the browser check -------------------------------------------------------

PAGES = ("index.html", "contract.html", "api.html")
# the peer table's first column, one call per cell, kept on one line by CSS
NOWRAP = "<style>table code { white-space: nowrap; }</style>"
PEER_TABLE = (
    '<table style="width: 6em"><tr><td><code>softmax([-inf, -inf])</code></td>'
    "<td>[0, 0]</td></tr></table>"
)


def _site(folder: Path, *, broken: bool, extra_html: str = "") -> None:
    """Three pages that pass the check (``broken``: with 3 broken links), the
    contract page's peer table kept on one line; ``extra_html`` goes into
    index.html."""
    nav = "".join(f'<a href="{p}">{p}</a>' for p in PAGES)
    titles = {"index.html": "softmax-xp", "contract.html": "The contract"}
    titles["api.html"] = "API reference"
    for page in PAGES:
        extra = ""
        if page == "contract.html":
            extra = (
                "<p>Beside SciPy, torch and JAX: scipy.special softmax([inf, 1.0])</p>"
                f"{NOWRAP}{PEER_TABLE}<p>x<sub>1</sub>, in code: "
                "<code>re.compile(r'\\d+\\(')</code></p>"
            )
        if page == "index.html":
            extra = (
                '<p id="top">no NaN comes out</p><a href="contract.html#edges">c</a>'
            )
            if broken:
                extra += (
                    '<a href="gone.html">x</a><a href="contract.html#nowhere">y</a>'
                )
                extra += '<img src="_static/missing.png">'
            extra += extra_html
        if page == "api.html":
            extra = "<p>logsumexp_state</p>" + "".join(
                f'<dt id="softmax_xp.{n}">{n}</dt>' for n in softmax_xp.__all__
            )
        (folder / page).write_text(
            f"<!DOCTYPE html><html><head><title>{titles[page]}</title></head>"
            f"<body><nav>{nav}</nav><h1>{titles[page]}</h1>"
            f'<h2 id="edges">edges</h2>{extra}</body></html>',
            encoding="utf-8",
        )


@pytest.fixture
def check_site():
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser")):
        if os.environ.get("SOFTMAX_XP_REQUIRE_BROWSER") == "1":  # CI installs it
            pytest.fail("no chromium on PATH, and SOFTMAX_XP_REQUIRE_BROWSER=1")
        pytest.skip("no chromium on PATH")
    return _module("check_site", DOCS)


def test_check_site_passes_a_sound_site(check_site, tmp_path, capsys):
    _site(tmp_path, broken=False)
    assert check_site.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 pages rendered" in out
    assert "FAIL" not in out


def test_check_site_reports_broken_links(check_site, tmp_path, capsys):
    _site(tmp_path, broken=True)
    assert check_site.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "index.html: <a> 'gone.html': no such file" in out
    assert "index.html: 'contract.html#nowhere': no element id 'nowhere'" in out
    assert "index.html: <img> '_static/missing.png': no such file" in out
    assert out.count("FAIL ") == 3


@pytest.mark.parametrize(
    ("html", "failure"),
    [
        (
            r"<p>The softmax of \(x_1, \dots, x_n\) is</p>",
            r"index.html: raw TeX in the text, 3 times; first \( in",
        ),
        (
            r'<div class="math">$$ \frac{e^{x_i}}{\sum_j e^{x_j}} $$</div>',
            "index.html: raw TeX in the text, 4 times; first $$ in",
        ),
        (
            '<script src="https://cdn.example.org/mathjax/tex-chtml.js"></script>',
            (
                "index.html: <script> loads "
                "'https://cdn.example.org/mathjax/tex-chtml.js' from the network"
            ),
        ),
        (
            '<link rel="stylesheet" href="//cdn.example.org/katex.min.css">',
            "index.html: <link> loads '//cdn.example.org/katex.min.css' from the network",
        ),
        (
            PEER_TABLE,
            "index.html: table code broken over lines: 'softmax([-inf, -inf])'",
        ),
    ],
    ids=["inline-tex", "display-tex", "cdn-script", "cdn-stylesheet", "wrapped-cell"],
)
def test_check_site_reports_what_a_reader_offline_sees_wrong(
    check_site, tmp_path, capsys, html, failure
):
    _site(tmp_path, broken=False, extra_html=html)
    assert check_site.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {failure}" in out
    assert out.count("FAIL ") == 1, out


def test_check_site_reports_a_missing_page(check_site, tmp_path, capsys):
    _site(tmp_path, broken=False)
    (tmp_path / "api.html").unlink()
    assert check_site.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL api.html: missing from the build" in out
    assert "FAIL index.html: the navigation does not link" not in out  # api gone


# --- the README's table of special cases ---------------------------------------

README = DOCS.parent / "README.md"


def _readme_table() -> list[list[str]]:
    """The cells of README's first table, header and rule included."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| input "))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split(" | ")])
    return rows


def _installed_version(peer) -> str | None:
    """The peer's version, if what it runs imports here."""
    try:
        importlib.import_module(peer.imports)
        version = importlib.import_module(peer.module).__version__
    except ImportError:
        return None
    return str(version).split("+")[0]  # torch's local part: "2.13.0+cpu"


def test_readme_table_is_the_special_case_table():
    """README's table is softmax_xp._special_cases.README, rendered: the first
    two columns always, each peer's column where the installed peer is the
    version the README names (others may answer differently)."""
    from softmax_xp import _special_cases as table

    header, rule, *rows = _readme_table()
    versions = [h.rsplit(" ", 1)[1] for h in header[2:]]
    assert [header, rule] == [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in table.markdown_header("softmax-xp", versions)
    ]
    assert len(rows) == len(table.README)
    peers = [
        peer if _installed_version(peer) == version else None
        for peer, version in zip(table.PEERS, versions, strict=True)
    ]
    same = [i + 2 for i, peer in enumerate(peers) if peer is not None]
    for row, case in zip(rows, table.README, strict=True):
        want = table.markdown_row(case, softmax_xp, peers).strip("|").split(" | ")
        want = [c.strip() for c in want]
        for col in (0, 1, *same):
            assert row[col] == want[col], (case.call, col, row[col], want[col])
