"""The softmax-xp benchmark suite: ours against the peers and the floors, in one run.

``softmax-xp bench --help`` (or ``python benchmarks/run.py --help``) for the
options; ``benchmarks/README.md`` in the repository for what is measured and
how. It ships inside the package so that an installed softmax-xp can time
itself on the user's machine; nothing here is imported unless ``bench`` runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._cases import (
    BACKENDS,
    FULL_LAYOUTS,
    GPU_DTYPES,
    GPU_LAYOUTS,
    GPU_QUICK_LAYOUTS,
    KINDS,
    QUICK_LAYOUTS,
    Layout,
    parse_layouts,
)
from ._report import evaluate_targets, format_report, plot, plot_scaling, write_json
from ._suite import Config, run_suite

__all__ = [
    "Config",
    "build_parser",
    "comma_separated",
    "config_from_args",
    "main",
    "run",
    "run_suite",
]

# the repository when run from a checkout (src/softmax_xp/_bench/../../..): only
# used to record the git commit, which is None elsewhere
ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = Path("softmax-xp-bench")
DTYPES = ("float16", "bfloat16", "float32", "float64")


def comma_separated(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type=``: ``"a,b"`` -> ``("a", "b")``, each one of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        bad = [s for s in items if s not in choices]
        if bad or not items:
            msg = f"{', '.join(bad) or 'none given'}; choose from {', '.join(choices)}"
            raise argparse.ArgumentTypeError(msg)
        return items

    return parse


def build_parser(
    parser: argparse.ArgumentParser | None = None,
    *,
    prog: str = "softmax-xp bench",
    default_out: Path = DEFAULT_OUT,
) -> argparse.ArgumentParser:
    """The suite's options, added to ``parser`` (a new one when ``None``)."""
    parser = parser or argparse.ArgumentParser(
        prog=prog,
        description=(
            "Time softmax-xp against scipy.special, torch, jax.nn and the "
            "np.exp / copy floors; print a ratio table and the performance targets, "
            "write JSON and a PNG plot."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the large shapes 64x smaller, 3 short repeats: proves the suite "
        "works (CI)",
    )
    parser.add_argument(
        "--backends",
        type=comma_separated(BACKENDS),
        default=BACKENDS,
        help=f"comma-separated, default all: {','.join(BACKENDS)} "
        "(the np.exp/copy floors always run; scipy comes with numpy)",
    )
    parser.add_argument(
        "--shapes",
        help="comma-separated ROWSxCOLS[:AXIS] or a named case (mlp: the "
        "training-loop row), e.g. 4096x4096,4096x4096:0,8x128,mlp (default: "
        f"{', '.join(layout.label for layout in FULL_LAYOUTS)}; with --quick the "
        "large ones 64x smaller)",
    )
    parser.add_argument(
        "--dtypes",
        type=comma_separated(DTYPES),
        help="comma-separated, default float32,float64 (the GPU run, "
        "softmax-xp bench --device gpu: float32,bfloat16; bfloat16 needs ml_dtypes)",
    )
    parser.add_argument(
        "--kinds",
        type=comma_separated(KINDS),
        default=KINDS,
        help=f"comma-separated, default {','.join(KINDS)} (softmax and "
        "log_softmax bring their forward+backward rows on 8x128 and 64x1024)",
    )
    parser.add_argument(
        "--repeat", type=int, help="timed batches per candidate (default 7; quick 3)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        help="seconds one batch lasts at least (default 0.05; quick 0.002)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds per candidate after which it stops at 3 repeats "
        "(quick: 1) (default 3; quick 0.1)",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads(N) before timing"
    )
    parser.add_argument(
        "--generic",
        action="store_true",
        help="also time ours under softmax_xp.force_generic() (the generic path)",
    )
    parser.add_argument(
        "--in-jit",
        action=argparse.BooleanOptionalAction,
        help="JAX: also time ours inside jax.jit (default on; off with --quick, "
        "where its compilations cost about a third of the run; the "
        "forward+backward and MLP rows are in jit either way)",
    )
    parser.add_argument("--seed", type=int, default=0, help="input RNG seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help=f"output folder for JSON and PNG (default {default_out})",
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def config_from_args(args: argparse.Namespace) -> Config:
    """The run's configuration; ``args.device == "gpu"`` (``softmax-xp bench
    --device gpu``) makes it the GPU run: the GPU layouts and dtypes, shorter
    batches (a GPU's times are steady), device floors, memory peaks."""
    gpu = getattr(args, "device", None) == "gpu"
    known: tuple[Layout, ...]
    if gpu:
        known = GPU_QUICK_LAYOUTS if args.quick else GPU_LAYOUTS
    else:
        known = QUICK_LAYOUTS if args.quick else FULL_LAYOUTS
    layouts = parse_layouts(args.shapes, known) if args.shapes else known
    quick = bool(args.quick)
    dtypes = args.dtypes or (GPU_DTYPES if gpu else ("float32", "float64"))
    repeat = _default(args.repeat, 3 if quick else (5 if gpu else 7))
    min_time = _default(args.min_time, 0.002 if quick else (0.02 if gpu else 0.05))
    budget = _default(args.budget, 0.1 if quick else (1.0 if gpu else 3.0))
    if repeat < 1 or min_time < 0 or budget < 0:
        msg = "--repeat must be at least 1; --min-time and --budget not negative"
        raise ValueError(msg)
    return Config(
        layouts=layouts,
        dtypes=tuple(dtypes),
        backends=args.backends,
        kinds=args.kinds,
        repeat=repeat,
        min_time=min_time,
        budget=budget,
        min_repeat=min(repeat, 1 if quick else 3),
        quick=quick,
        generic=args.generic,
        in_jit=not quick if args.in_jit is None else args.in_jit,
        torch_threads=args.torch_threads,
        seed=args.seed,
        gpu=gpu,
    )


Progress = Callable[[int, int, str], None]


def run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    progress: Progress | None = None,
) -> int:
    """Run the suite for parsed ``args``; 0 unless a candidate raised.

    A missed target never changes the status: CI proves that the suite runs,
    it does not judge speed on a shared machine. ``progress(done, total,
    label)`` is called after each input (layout and dtype).
    """
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    import softmax_xp as sx

    result = run_suite(config, sx, ROOT, progress=progress)
    result["targets"] = evaluate_targets(result)
    print(format_report(result))

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    gpu = "gpu-" if config.gpu else ""
    stem = f"bench-{gpu}{result['mode']}-{stamp}"
    json_path = out / f"{stem}.json"
    write_json(result, json_path)
    print(f"\nJSON: {json_path}")
    if not args.no_plot:
        png_path = out / f"{stem}.png"
        why = plot(result, png_path)
        # "no PNG: matplotlib is not installed (pip install 'softmax-xp[cli]')"
        print(f"PNG: {png_path}" if why is None else why)
        if why is None:
            scaling_path = out / f"{stem}-scaling.png"
            why = plot_scaling(result, scaling_path)
            print(f"PNG: {scaling_path}" if why is None else why)
    if result["errors"]:
        print(
            f"{len(result['errors'])} candidate(s) raised; see 'errors' above",
            file=sys.stderr,
        )
        return 1
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "softmax-xp bench",
    default_out: Path = DEFAULT_OUT,
) -> int:
    """Run the suite from a command line (no progress bar: logs go to stderr)."""
    parser = build_parser(prog=prog, default_out=default_out)
    return run(parser.parse_args(argv), parser)
