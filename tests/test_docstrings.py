"""Every public function's docstring example runs and prints what it shows.

The printed values in the examples are the seed's figures and SciPy's (see the
docstrings); this test keeps them from drifting from what the code returns.
"""

from __future__ import annotations

import doctest

import pytest
from conftest import needs

import softmax_xp

pytestmark = needs("numpy")


@pytest.mark.parametrize("name", [n for n in softmax_xp.__all__ if n != "__version__"])
def test_docstring_example_runs(name: str) -> None:
    func = getattr(softmax_xp, name)
    assert func.__doc__
    assert ">>>" in func.__doc__, f"{name} has no example"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(func, name, globs={}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
