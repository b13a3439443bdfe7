"""``softmax-xp info``: versions, importable backends, their devices and paths."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import BACKENDS, describe_error, library, targets

__all__ = ["LIBRARIES", "collect", "format_info", "run"]

# what `info` lists, (import name, distribution name, role): NumPy and the
# libraries around it, every other backend of the registry, the bfloat16 dtypes
LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("numpy", "numpy", "backend"),
    ("array_api_compat", "array-api-compat", "dependency"),
    ("scipy", "scipy", "peer"),
    *((b.name, b.dist or b.name, "backend") for b in BACKENDS if b.name != "numpy"),
    ("ml_dtypes", "ml_dtypes", "dtypes"),
)


def _path(put: Any) -> str:
    """``fast`` or ``generic``: the path an array made by ``put`` takes."""
    from .._compat import array_namespace
    from .._fast import path_of

    return path_of(array_namespace(put(np.zeros(2))))


def collect() -> dict[str, Any]:
    """Everything ``info`` prints, as JSON-able data."""
    import softmax_xp

    libraries = []
    for name, dist, role in LIBRARIES:
        lib = library(name, dist)
        entry: dict[str, Any] = {
            "name": dist,
            "role": role,
            "version": lib.version,
            "status": lib.status,
        }
        if role == "backend" and lib.status == "ok":
            found, why = targets(name)
            entry["devices"] = [t.device for t in found]
            if why is not None:
                entry["status"] = why
            paths = set()
            for t in found:
                try:
                    paths.add(_path(t.put))
                except Exception as exc:  # noqa: BLE001 - reported, info goes on
                    paths.add(f"error ({describe_error(exc)})")
            entry["path"] = ", ".join(sorted(paths)) or None
        libraries.append(entry)
    forced = os.environ.get("SOFTMAX_XP_FORCE_GENERIC", "")
    return {
        "softmax_xp": {
            "version": softmax_xp.__version__,
            "location": str(Path(softmax_xp.__file__).parent),
            "SOFTMAX_XP_FORCE_GENERIC": forced or None,
        },
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": libraries,
        "backends": [
            e["name"].replace("-", "_")
            for e in libraries
            if e["role"] == "backend" and e.get("devices")
        ],
    }


def format_info(data: dict[str, Any]) -> str:
    sx = data["softmax_xp"]
    lines = [
        f"softmax-xp {sx['version']} ({sx['location']})",
        f"Python {data['python']} on {data['platform']}",
    ]
    if sx["SOFTMAX_XP_FORCE_GENERIC"]:
        lines.append(
            f"SOFTMAX_XP_FORCE_GENERIC={sx['SOFTMAX_XP_FORCE_GENERIC']} "
            "(fast paths off where it reads as true)"
        )
    lines += ["", f"{'library':<18}{'version':<14}{'path':<9}devices / status"]
    for e in data["libraries"]:
        version = e["version"] or "-"
        path = e.get("path") or "-"
        if e["status"] == "ok":
            where = ", ".join(e["devices"]) if "devices" in e else f"({e['role']})"
        else:
            where = e["status"]
        lines.append(f"{e['name']:<18}{version:<14}{path:<9}{where}")
    lines += [
        "",
        (
            "path: fast = a backend-specific implementation, generic = the "
            "array-API core (same answers)."
        ),
        f"usable backends: {', '.join(data['backends']) or 'none'}",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the same facts as JSON"
    )


def run(args: argparse.Namespace) -> int:
    data = collect()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_info(data))
    return 0
