"""The subcommands of ``softmax-xp`` other than ``demo``: one module each.

Nothing here is imported until ``softmax_xp.__main__`` builds its parser; no
optional backend is imported until a subcommand runs.
"""
