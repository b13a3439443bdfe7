"""``python benchmarks/run.py [--quick] [--backends ...] [--shapes ...] [--out DIR]``.

A thin entry point: the suite lives in ``softmax_xp_bench`` beside this file.
softmax-xp is imported from this tree's ``src/`` so that the code beside the
suite is what gets timed, installed or not.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if (SRC / "softmax_xp").is_dir():
    sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE))

from softmax_xp_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
