"""softmax-xp: one numerically stable softmax family for every array API backend."""

from ._api import log_softmax, logsumexp, softmax, softmin
from ._fast import force_generic
from ._fast._parallel import num_threads
from ._streaming import (
    LogSumExpState,
    log_softmax_from_state,
    logsumexp_combine,
    logsumexp_finish,
    logsumexp_state,
    softmax_from_state,
)
from ._version import __version__

__all__ = [
    "LogSumExpState",
    "__version__",
    "force_generic",
    "log_softmax",
    "log_softmax_from_state",
    "logsumexp",
    "logsumexp_combine",
    "logsumexp_finish",
    "logsumexp_state",
    "num_threads",
    "softmax",
    "softmax_from_state",
    "softmin",
]
