"""``python benchmarks/run.py [--quick] [--backends ...] [--shapes ...] [--out DIR]``.

A thin entry point to the suite, which ships in the package as
``softmax_xp._bench`` (the same as ``softmax-xp bench``). softmax-xp is
imported from this tree's ``src/`` so that the code beside this file is what
gets timed, installed or not; results go to ``benchmarks/results/``.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if (SRC / "softmax_xp").is_dir():
    sys.path.insert(0, str(SRC))

from softmax_xp._bench import main

if __name__ == "__main__":
    raise SystemExit(main(prog="benchmarks/run.py", default_out=HERE / "results"))
