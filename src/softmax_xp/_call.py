"""A validated call, and the dtypes it computes in.

:class:`Call` is what validation hands to the computing layers (the generic
core, the fast paths, the shared kernels). The dtype rules that every layer
must agree on live here, next to it, so no layer re-derives them:

- :func:`compute_dtype`: half precision computes in float32;
- :func:`lse_compute_dtype`: the accuracy policy of logsumexp (float32 in
  float64 where float32 ``exp`` is not accurate enough);
- :func:`input_rounding`: the dtype a narrowing ``dtype=`` rounds the input
  to before anything is computed (docs/decisions.md, "What a narrowing
  ``dtype=`` rounds, per function").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._compat import Array, Namespace, bits, dtype_kind, library_of

__all__ = ["Call", "compute_dtype", "input_rounding", "lse_compute_dtype", "rounds"]


# Not frozen: a frozen dataclass's __init__ costs ~2 us more per call, which is
# a tenth of a small softmax. Nothing mutates a Call; it is hashable (by value)
# because the JAX path keys its compiled kernels on the static fields.
@dataclass(slots=True, unsafe_hash=True)
class Call:
    """A validated call: the array, its namespace and every option normalised."""

    func: str
    x: Array  # as given (logsumexp: not yet broadcast with b nor promoted)
    xp: Namespace
    shape: tuple[Any, ...]  # the shape the computation runs on (x and b jointly)
    axes: tuple[int, ...]  # sorted, non-negative
    where: Array | None  # boolean, broadcastable to x
    temperature: float | Array | None  # Python float > 0, or an array of xp
    b: Array | None  # logsumexp weights, already broadcast jointly with x
    out_dtype: Any
    compute_dtype: Any  # float32 for half precision, else out_dtype
    device: Any

    @property
    def empty(self) -> bool:
        """Whether ``x`` has no elements: the result is a fill, nothing to compute.

        A zero-length reduced axis leaves nothing in any slice; a zero-length
        other axis leaves no slices. (Dask's reductions fail on both.)
        """
        return any(n == 0 for n in self.shape)


def compute_dtype(xp: Namespace, out_dtype: Any) -> Any:
    """The dtype a result of ``out_dtype`` is computed in: float32 for half precision."""
    if dtype_kind(xp, out_dtype) == "real floating" and bits(xp, out_dtype) == 16:
        return xp.float32
    return out_dtype


def lse_compute_dtype(xp: Namespace, dtype: Any, dev: Any) -> Any:
    """The dtype logsumexp (and its streaming finish) computes a ``dtype`` result in.

    logsumexp's bound is 2 ulp, and ``log1p`` passes the error of ``exp``
    straight into a small result. NumPy's SIMD float32 ``exp`` errs by up to
    about 2.5 ulp (NumPy 1.20 release notes), so NumPy-backed namespaces
    compute float32 logsumexp in float64 and round once, where the device has
    float64. Other libraries' float32 ``exp`` is accurate enough.
    """
    compute = compute_dtype(xp, dtype)
    if compute != xp.float32:
        return compute
    if library_of(xp) not in ("numpy", "dask", "array_api_strict"):
        return compute
    dtypes = xp.__array_namespace_info__().dtypes(device=dev, kind="real floating")
    return xp.float64 if "float64" in dtypes else compute


def rounds(xp: Namespace, src: Any, dst: Any) -> bool:
    """Whether casting real floating ``src`` to ``dst`` can change a value."""
    try:
        a, b = xp.finfo(src), xp.finfo(dst)
    except Exception:  # noqa: BLE001 - extension dtypes (ml_dtypes) have no finfo here
        return bits(xp, dst) <= bits(xp, src)
    return not (float(b.eps) <= float(a.eps) and float(b.max) >= float(a.max))


def input_rounding(call: Call, src: Any) -> Any:
    """The dtype a floating input of dtype ``src`` is rounded to first, or ``None``.

    A narrowing ``dtype=`` rounds the input to it before anything is computed
    (values beyond its range become ``+-inf``, as IEEE rounding does), so that
    every backend and path sees the same values: softmax, log_softmax and
    softmin round to the output dtype itself, half included (then widen to
    float32); logsumexp, a reduction, rounds to the output's compute dtype
    (float32 for half outputs), since its result is rounded once at the end
    and its sign is that of the float32 total.
    """
    xp = call.xp
    target = call.out_dtype
    if call.func.startswith("logsumexp"):
        target = compute_dtype(xp, target)
    if src != target and rounds(xp, src, target):
        return target
    return None
