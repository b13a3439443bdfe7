"""``softmax-xp bench``: the benchmark suite, with a progress bar.

The suite itself is :mod:`softmax_xp._bench` (``benchmarks/run.py`` in a
checkout calls the same code). This module adds ``--device`` and the progress
bar: rich's when rich is installed, tqdm's when tqdm is, else a plain counter
on stderr (the suite's own log lines).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

from .._backends import matrix

__all__ = ["add_arguments", "run"]

# which of the suite's backends run where, as the registry says; JAX runs on its
# default device, whichever that is
_ON = {
    "cpu": set(matrix(gpu=False)),
    "gpu": {*matrix(gpu=True), "jax"},
}

Progress = Callable[[int, int, str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .._bench import build_parser

    build_parser(parser)
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu", "all"),
        default="all",
        help="keep only the backends that run there (default all: CPU backends, "
        "plus torch-cuda and cupy where a GPU is present); jax uses its default "
        "device either way",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (the suite still logs each input to stderr)",
    )


@contextlib.contextmanager
def _rich() -> Iterator[Progress]:
    progress_mod: Any = importlib.import_module("rich.progress")
    bar = progress_mod.Progress(
        progress_mod.TextColumn("bench"),
        progress_mod.BarColumn(),
        progress_mod.MofNCompleteColumn(),
        progress_mod.TextColumn("{task.description}"),
        progress_mod.TimeElapsedColumn(),
        transient=False,
    )
    task: list[Any] = []

    def update(done: int, total: int, label: str) -> None:
        if not task:
            task.append(bar.add_task("", total=total))
        bar.update(task[0], completed=done, description=label)

    with bar:
        yield update


@contextlib.contextmanager
def _tqdm() -> Iterator[Progress]:
    tqdm: Any = importlib.import_module("tqdm").tqdm
    bars: list[Any] = []

    def update(done: int, total: int, label: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="bench", unit="input"))
        bars[0].set_postfix_str(label)
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for b in bars:
            b.close()


@contextlib.contextmanager
def _none() -> Iterator[Progress | None]:
    yield None


def progress_bar(enabled: bool) -> contextlib.AbstractContextManager[Progress | None]:
    """rich, else tqdm, else nothing (the suite's ``[i/n]`` lines count)."""
    if enabled and importlib.util.find_spec("rich") is not None:
        return _rich()
    if enabled and importlib.util.find_spec("tqdm") is not None:
        return _tqdm()
    return _none()


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .._bench import run as run_suite

    if args.device != "all":
        kept = tuple(b for b in args.backends if b in _ON[args.device])
        if not kept:
            parser.error(
                f"--device {args.device}: none of --backends "
                f"{','.join(args.backends)} runs there"
            )
        args.backends = kept
    with progress_bar(not args.no_progress) as progress:
        return run_suite(args, parser, progress)
