"""The special cases beside the peers: one table for the demo, the docs and the README.

Each case is an input and one call of softmax-xp. The peers (``scipy.special``,
``torch``, ``jax.nn``) are asked the same question the way their users ask it:
where a peer has no ``where=``, masked entries are written as ``-inf``; a
temperature ``t`` becomes ``x / t``; torch, which has no default axis, gets
``dim=-1``. Nothing is imported here but NumPy: each peer is imported when it
is run, by the demo (``softmax-xp demo``) or by the docs build
(``docs/_ext/peers.py``); ``tests/test_docs_site.py`` holds the README's table
to :data:`README`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ALL_MASKED",
    "ALL_MINUS_INF",
    "CASES",
    "FLOAT16_ZEROS",
    "INF_AND_FINITE",
    "PEERS",
    "README",
    "TINY_LOGSUMEXP",
    "Case",
    "Peer",
    "cell",
    "markdown_header",
    "markdown_row",
    "to_numpy",
]

INF = float("inf")
NAN = float("nan")
N_FLOAT16_ZEROS = 70_000


@dataclass(frozen=True)
class Case:
    """One input and the call of softmax-xp on it (``function(x, **options)``)."""

    topic: str  # the docs' heading the case sits under
    function: str  # "softmax", "log_softmax" or "logsumexp"
    values: Any  # a list of floats, or a NumPy array
    dtype: str = "float64"
    axis: Any = None  # None: the function's default (torch: dim=-1)
    where: tuple[bool, ...] | None = None
    temperature: float | None = None
    text: str | None = None  # the docs' first column; None: the call, in code
    note: str = ""  # after the first column, in parentheses
    show: str = "values"  # the docs' cells: "values", "dtype" or "first-and-sum"
    title: str | None = None  # the demo's title; None: the call

    @property
    def call(self) -> str:
        """The call as Python, e.g. ``softmax([inf, 1.0], where=[True, False])``."""
        options = [
            f"{name}={value!r}"
            for name, value in (
                ("where", None if self.where is None else list(self.where)),
                ("temperature", self.temperature),
                ("axis", self.axis),
            )
            if value is not None
        ]
        return f"{self.function}({', '.join([repr(self.values), *options])})"

    def heading(self) -> str:
        """The first column of the docs' and the README's table, in Markdown."""
        head = self.text or f"`{self.call}`"
        return head + (f" ({self.note})" if self.note else "")

    def x(self) -> np.ndarray:
        return np.asarray(self.values, dtype=self.dtype)

    def ours(self, sx: Any) -> Any:
        options: dict[str, Any] = {}
        if self.where is not None:
            options["where"] = np.asarray(self.where)
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.axis is not None:
            options["axis"] = self.axis
        return getattr(sx, self.function)(self.x(), **options)

    def peer_input(self, *, fill_masked: bool = True) -> np.ndarray:
        """``x`` as a peer without ``temperature=`` (and, with ``fill_masked``,
        without ``where=``) is given it."""
        x = self.x()
        if fill_masked and self.where is not None:
            x = np.where(np.asarray(self.where), x, -INF)
        if self.temperature is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                x = x / self.temperature
        return x


def _scipy(case: Case) -> Any:
    special = importlib.import_module("scipy.special")
    return getattr(special, case.function)(case.peer_input(), **_axis(case))


def _torch(case: Case) -> Any:
    torch = importlib.import_module("torch")
    x = torch.asarray(case.peer_input())
    return getattr(torch, case.function)(x, dim=-1 if case.axis is None else case.axis)


def _jax(case: Case) -> Any:
    nn = importlib.import_module("jax.nn")
    jnp = importlib.import_module("jax.numpy")
    options = _axis(case)
    if case.where is not None:  # jax.nn has where=
        options["where"] = jnp.asarray(case.where)
    x = case.peer_input(fill_masked=False)
    return getattr(nn, case.function)(jnp.asarray(x), **options)


def _axis(case: Case) -> dict[str, Any]:
    """``axis=`` as given; none given, the peer's own default (SciPy's and JAX's
    logsumexp reduce every axis)."""
    return {} if case.axis is None else {"axis": case.axis}


@dataclass(frozen=True)
class Peer:
    """A library that has the softmax family, and how it is asked a case."""

    module: str  # the module whose presence says it is installed (and its version)
    imports: str  # the module it runs (a SciPy without scipy.special has no peer)
    heading: str  # the table's column heading, in Markdown
    prefix: str  # its function's name is prefix + case.function
    masked_as: str  # how it is told of masked entries, as the demo says
    run: Callable[[Case], Any]  # the peer's answer, in its own array type

    def label(self, case: Case) -> str:
        """``scipy.special.softmax (-inf)``: its function, and how the mask went in."""
        mask = f" ({self.masked_as})" if case.where is not None else ""
        return f"{self.prefix}{case.function}{mask}"


PEERS: tuple[Peer, ...] = (
    Peer("scipy", "scipy.special", "`scipy.special`", "scipy.special.", "-inf", _scipy),
    Peer("torch", "torch", "`torch`", "torch.", "-inf", _torch),
    Peer("jax", "jax.nn", "`jax.nn`", "jax.nn.", "where=", _jax),
)


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy array of any library's answer (torch's bfloat16 as float32)."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    return np.asarray(value)


# --- the table, in the docs' order ---------------------------------------------

INF_AND_FINITE = Case("special values", "softmax", [INF, 1.0])
ALL_MINUS_INF = Case("special values", "softmax", [-INF, -INF], note="nothing left")
TINY_LOGSUMEXP = Case(
    "special values", "logsumexp", [0.0, -40.0], note="exact: `4.248e-18`"
)
ALL_MASKED = Case(
    "masks",
    "softmax",
    [1.0, 2.0],
    where=(False, False),
    note="fully masked; SciPy and torch get `-inf` there",
    title="softmax([1.0, 2.0]) with every entry masked",
)
FLOAT16_ZEROS = Case(
    "dtypes",
    "softmax",
    np.zeros(N_FLOAT16_ZEROS),
    dtype="float16",
    text=f"`softmax` of {N_FLOAT16_ZEROS:,} float16 zeros: first entry, sum",
    note=f"exact: 1/{N_FLOAT16_ZEROS:,} each; a float16 sum of the exponentials overflows",
    show="first-and-sum",
    title=(
        f"softmax of {N_FLOAT16_ZEROS:,} float16 zeros "
        f"(1/{N_FLOAT16_ZEROS:,} = {1 / N_FLOAT16_ZEROS:.4g})"
    ),
)


def _dtype_case(dtype: str) -> Case:
    return Case(
        "dtypes",
        "softmax",
        [1, 2],
        dtype=dtype,
        text=f"dtype of `softmax({dtype} [1, 2])`",
        show="dtype",
    )


CASES: tuple[Case, ...] = (
    Case("special values", "softmax", [1010.0, 1000.0, 990.0]),
    INF_AND_FINITE,
    Case("special values", "softmax", [INF, INF, 1.0]),
    ALL_MINUS_INF,
    Case("special values", "softmax", [NAN, 1.0]),
    Case("special values", "softmax", [], note="empty slice"),
    Case("special values", "log_softmax", [INF, 1.0]),
    Case("special values", "log_softmax", [-INF, -INF]),
    TINY_LOGSUMEXP,
    Case("special values", "logsumexp", [INF, -INF]),
    Case("special values", "logsumexp", [-INF, -INF]),
    Case("special values", "logsumexp", []),
    Case("masks", "softmax", [1.0, 2.0, 3.0], where=(True, True, False)),
    ALL_MASKED,
    Case("masks", "softmax", [NAN, 1.0], where=(False, True), note="NaN masked out"),
    Case(
        "temperature",
        "softmax",
        [1.0, 2.0, 3.0],
        temperature=0.5,
        note="peers: `x / 0.5`",
    ),
    FLOAT16_ZEROS,
    _dtype_case("float16"),
    _dtype_case("float32"),
    _dtype_case("int64"),
    Case(
        "dtypes",
        "softmax",
        [1, 2],
        dtype="complex128",
        text="`softmax(complex [1, 2])`",
    ),
    Case(
        "axes",
        "softmax",
        np.ones((2, 2)),
        axis=(0, 1),
        text="`softmax(ones((2, 2)), axis=(0, 1))`",
    ),
    Case(
        "axes",
        "logsumexp",
        np.ones((2, 2)),
        text="`logsumexp(ones((2, 2)))` (default axis)",
        note="torch has no default: `dim=-1` passed",
    ),
    Case("errors", "softmax", [1.0, 2.0], axis=1),
    Case("errors", "softmax", [1.0, 2.0], axis=1.0),
    Case("errors", "softmax", [1.0, 2.0], temperature=0, note="peers: `x / 0`"),
)
# the README's table, in its order
README: tuple[Case, ...] = (
    INF_AND_FINITE,
    ALL_MINUS_INF,
    ALL_MASKED,
    FLOAT16_ZEROS,
    TINY_LOGSUMEXP,
)


# --- the docs' cells ---------------------------------------------------------


def _fmt_float(v: float) -> str:
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.7g}"


def _dtype_name(value: Any) -> str:
    return str(getattr(value, "dtype", type(value).__name__)).removeprefix("torch.")


def cell(run: Callable[[], Any], case: Case) -> str:
    """One cell of the docs' table: what ``run()`` gave, in Markdown, as
    ``case.show`` asks; an exception's type where it raised."""
    try:
        with np.errstate(all="ignore"):
            value = run()
    except Exception as exc:  # noqa: BLE001 - the table reports what each library raises
        return f"`{type(exc).__name__}`"
    if case.show == "dtype":
        return f"`{_dtype_name(value)}`"
    arr = to_numpy(value)
    if np.iscomplexobj(arr):
        return f"complex `{arr.dtype}`"
    if case.show == "first-and-sum":
        total = float(np.sum(arr.astype(np.float64)))
        return f"`{_fmt_float(float(arr.ravel()[0]))}`, sum `{_fmt_float(total)}`"
    flat = arr.astype(np.float64).ravel()
    if arr.ndim == 0:
        return f"`{_fmt_float(float(flat[0]))}`"
    return "`[" + ", ".join(_fmt_float(float(v)) for v in flat) + "]`"


def markdown_header(ours: str, versions: Sequence[str | None]) -> list[str]:
    """The table's heading and rule: ``ours`` names softmax-xp's column, each
    peer's column carries its version (``None``: not installed, no version)."""
    head = ["input (float64 unless stated)", ours]
    for peer, version in zip(PEERS, versions, strict=True):
        head.append(f"{peer.heading} {version}" if version else peer.heading)
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def markdown_row(case: Case, sx: Any, peers: Sequence[Peer | None]) -> str:
    """``| case | softmax-xp | each peer |``; a ``None`` peer reads "not installed"."""
    row = [case.heading(), cell(functools.partial(case.ours, sx), case)]
    for peer in peers:
        row.append(
            "not installed"
            if peer is None
            else cell(functools.partial(peer.run, case), case)
        )
    return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
