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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; a new subcommand is one more ``add_parser`` here."""
    parser = argparse.ArgumentParser(
        prog="softmax-xp",
        description=(
            "One numerically stable softmax family for every array API backend."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    demo = commands.add_parser(
        "demo",
        help="the stable formula against the naive one, on every installed backend",
        description=(
            "Print softmax of two small vectors on NumPy, the naive formula "
            "overflowing beside it, the special-value contract, and the same "
            "call on every other installed backend."
        ),
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
