"""softmax-xp: one numerically stable softmax family for every array API backend."""

from ._api import log_softmax, logsumexp, softmax, softmin
from ._version import __version__

__all__ = ["__version__", "log_softmax", "logsumexp", "softmax", "softmin"]
