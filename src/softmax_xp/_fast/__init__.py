"""Optional fast paths, one module per backend, imported only for that backend's arrays.

Each is an optimisation of :mod:`softmax_xp._generic` and must give its answers.
"""
