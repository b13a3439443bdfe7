"""The ``softmax-xp`` command (also ``python -m softmax_xp``).

Each subcommand is a function taking the parsed arguments and returning the
exit status; it imports what it needs when it runs, so that ``--help`` stays
fast and no backend is imported before a subcommand asks for it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _demo(args: argparse.Namespace) -> int:  # noqa: ARG001 - demo takes no options yet
    from ._demo import run_demo

    return run_demo()


def _info(args: argparse.Namespace) -> int:
    from ._cli import info

    return info.run(args)


def _check(args: argparse.Namespace) -> int:
    from ._cli import check

    return check.run(args)


def _bench(args: argparse.Namespace) -> int:
    from ._cli import bench

    sub: argparse.ArgumentParser = args.subparser
    return bench.run(args, sub)


EPILOG = """\
examples:
  softmax-xp info                 versions, backends, devices, fast or generic path
  softmax-xp check                the contract on every backend here (exit 1 on FAIL)
  softmax-xp check --json > check.json
  softmax-xp bench --quick        a short benchmark run: table, JSON and PNG
  softmax-xp demo                 the naive formula overflowing, the stable one

Each command imports only the backends it needs, when it runs.
"""


# name, one-line help, description of each subcommand, in the order --help lists them
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    (
        "demo",
        "the stable formula against the naive one, on every installed backend",
        (
            "Print softmax of two small vectors on NumPy, the naive formula "
            "overflowing beside it, the special-value contract, and the same "
            "call on every other installed backend."
        ),
    ),
    (
        "info",
        "versions, importable backends, their devices and paths",
        (
            "Print the versions of softmax-xp and of the libraries it works with, "
            "which backends import, the devices each one sees, and whether "
            "softmax-xp takes its fast path or the generic array-API core on "
            "each. Paste it into a bug report."
        ),
    ),
    (
        "check",
        "the contract and accuracy spot checks on every backend and device",
        (
            "Run every row of the special-value contract (NaN, +inf, -inf, fully "
            "masked and empty slices), the float16 and logsumexp edge cases, "
            "integer input and accuracy spot checks against Python float math, "
            "on every installed backend and every device it sees. Prints PASS, "
            "FAIL or SKIP (with the reason) per check; exits 1 on any FAIL. "
            "JAX runs with jax_enable_x64 so that float64 is checked too."
        ),
    ),
    (
        "bench",
        "time softmax-xp against each backend's own softmax and the floors",
        (
            "Time softmax-xp against scipy.special, torch, jax.nn and the "
            "np.exp / copy floors; print the ratio table and the performance "
            "targets, and write the raw timings as JSON and two PNG plots "
            "(throughput per case, and throughput against input size). "
            "The PNGs need matplotlib; the progress bar uses rich or tqdm "
            "when installed (pip install 'softmax-xp[cli]')."
        ),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; a new subcommand is one more ``add_parser`` here."""
    parser = argparse.ArgumentParser(
        prog="softmax-xp",
        description=(
            "One numerically stable softmax family for every array API backend."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    from ._cli import bench, check, info

    handlers: dict[str, Handler] = {
        "demo": _demo,
        "info": _info,
        "check": _check,
        "bench": _bench,
    }
    options = {
        "info": info.add_arguments,
        "check": check.add_arguments,
        "bench": bench.add_arguments,
    }
    for name, summary, description in _COMMANDS:
        sub = commands.add_parser(name, help=summary, description=description)
        if name in options:
            options[name](sub)
        sub.set_defaults(handler=handlers[name], subparser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
