"""softmax-xp: one numerically stable softmax family for every array API backend."""

from ._api import log_softmax, logsumexp, softmax, softmin
from ._fast import force_generic
from ._version import __version__

__all__ = [
    "__version__",
    "force_generic",
    "log_softmax",
    "logsumexp",
    "softmax",
    "softmin",
]
