"""Variance of Gradients (Agarwal et al., CVPR 2022), accumulated one epoch at a time.

At each epoch (or checkpoint) t, every example i contributes S_t(i) = ∂ logit_gold / ∂ x, the
gradient of its gold-class logit with respect to the input the model sees (the embedding for a
probe, the pixels or the input embeddings when fine-tuning, the model input for checkpoints).
The raw score is the mean over input dimensions of the variance over t of S_t(i)::

    VoG_i = 1/D Σ_d  1/T Σ_t (S_t(i)_d − μ_i,d)²,   μ_i,d = 1/T Σ_t S_t(i)_d

and the paper normalises it within each class (subtract the class mean, divide by the class
standard deviation), so classes are comparable. Higher = harder.

Memory. :class:`VogAccumulator` keeps, per example, the running mean of its gradient (n × D)
and the running sum of squared deviations summed over dimensions (float64, n), updated by
Welford's method, so the gradients of an epoch never need to be held at once and no
E[x²] − E[x]² cancellation occurs. The mean is float64 up to ``FLOAT64_MAX`` numbers (128 MB)
and float32 above: the gradients arrive as float32, so a float32 mean costs at most a few 1e-6
of relative precision. Up to ``EXACT_MAX`` numbers (n · D) VoG is exact; above it (at 1M × 384
the mean alone would be 1.5 GB) the gradients are first multiplied by a fixed Gaussian matrix P
of shape (D, ``PROJECTED_DIMS``) with entries N(0, 1/D) (:func:`projection_for`). For any
gradient covariance over epochs C_i, E[mean_j var_t((S_t P)_j)] = tr(C_i)/D, the exact VoG, so
the projected score is unbiased; its relative standard deviation is at most sqrt(2/64) ≈ 0.18
(when the gradient moves along a single direction) and about sqrt(2/(64·rank C_i)) otherwise.
Measured on the probe's gradients for the Debian sample (1,549 × 384, projection forced):
Spearman 0.86 with the exact VoG, median relative error 12%, 85% of the top tenth kept.
At 1M examples the accumulator then holds 1M × 64 float32 (256 MB) instead of 1M × 384 × 2
float64 (6 GB). :func:`normalise_within_class` gives the score column ``vog``.

The accumulator serves sources that see each epoch's gradients once (checkpoints, fine-tuning).
The probe needs none: it keeps its small head's weights from every epoch and computes each
example's VoG exactly after training, a chunk of examples at a time
(:func:`analytics.dynamics.fit_probe_run`).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["VogAccumulator", "normalise_within_class", "projection_for", "reduce_gradients",
           "EXACT_MAX", "PROJECTED_DIMS", "FLOAT64_MAX"]

#: Largest n_examples × n_dimensions for which VoG is accumulated exactly (a 256 MB float32 mean).
EXACT_MAX = 1 << 26
#: Width of the random projection used above ``EXACT_MAX``.
PROJECTED_DIMS = 64
#: Largest n_examples × accumulated dimensions whose running mean is kept in float64 (128 MB).
FLOAT64_MAX = 1 << 24


@functools.lru_cache(maxsize=4)
def _gaussian(d: int, dims: int, seed: int) -> np.ndarray:
    matrix = (np.random.default_rng(seed).standard_normal((d, dims)) / np.sqrt(d)).astype(np.float32)
    matrix.setflags(write=False)  # shared through the cache
    return matrix


def projection_for(n: int, d: int, *, dims: int | str | None = "auto", seed: int = 0) -> np.ndarray | None:
    """The random projection applied to the D-dimensional gradients of ``n`` examples, or None.

    Parameters
    ----------
    n, d : int
        Examples and gradient dimensions.
    dims : "auto", int or None, default "auto"
        "auto": None (exact) while ``n * d <= EXACT_MAX``, else ``PROJECTED_DIMS``. An int
        projects to that many dimensions (None when it is not below ``d``); None never projects.
    seed : int, default 0
        The same (d, dims, seed) always gives the same matrix, in any process.

    Returns
    -------
    ndarray of shape (d, dims), float32, read-only, entries N(0, 1/d); or None
    """
    if dims == "auto":
        dims = None if int(n) * int(d) <= EXACT_MAX else PROJECTED_DIMS
    elif dims is not None and (not isinstance(dims, (int, np.integer)) or dims < 1):
        raise ValueError(f"dims must be 'auto', a positive int or None, not {dims!r}")
    if dims is None or dims >= d:
        return None
    return _gaussian(int(d), int(dims), int(seed))


def reduce_gradients(grads: np.ndarray, *, n: int, dims: int | str | None = "auto", seed: int = 0) -> np.ndarray:
    """``grads`` (b, d) as a :class:`VogAccumulator` of ``n`` examples would keep them: projected
    by :func:`projection_for` when that gives a matrix, else unchanged (float32).

    For a worker that computes gradients batch by batch and returns them for all ``n`` examples
    (checkpoint dynamics): it keeps (n, ``PROJECTED_DIMS``) rather than (n, d) when n · d is large.
    The receiving side accumulates them with ``VogAccumulator(n, width, dims=None)``.
    """
    grads = np.asarray(grads, dtype=np.float32)
    projection = projection_for(n, grads.shape[1], dims=dims, seed=seed)
    return grads if projection is None else grads @ projection


class VogAccumulator:
    """Running per-example mean and squared deviation of the input gradient over epochs.

    ``add(rows, grads)`` during an epoch (``grads`` of shape (len(rows), d): torch tensor or
    ndarray), ``end_epoch()`` after it; every example must get exactly one gradient per epoch.
    ``raw()`` is the unnormalised VoG of every example, shape (n,).

    Parameters
    ----------
    n, d : int
        Examples and gradient dimensions.
    dims : "auto", int or None, default "auto"
        Accumulate a random projection of the gradients (see :func:`projection_for` and the
        module docstring): by default only when n · d exceeds ``EXACT_MAX``.
    seed : int, default 0
        Seed of the projection.

    Attributes
    ----------
    projection : ndarray of shape (d, width) or None
    width : int
        The dimensions accumulated: ``d``, or the projection's width.
    dtype : numpy dtype
        Of the running mean: float64 up to ``FLOAT64_MAX`` numbers, else float32.
    epochs : int
        Epochs ended so far.
    """

    def __init__(self, n: int, d: int, *, dims: int | str | None = "auto", seed: int = 0):
        self.n, self.d = int(n), int(d)
        self.projection = projection_for(self.n, self.d, dims=dims, seed=seed)
        self.width = self.d if self.projection is None else self.projection.shape[1]
        self.dtype = np.dtype(np.float64 if self.n * self.width <= FLOAT64_MAX else np.float32)
        self._mean = np.zeros((self.n, self.width), dtype=self.dtype)
        self._squares = np.zeros(self.n, dtype=np.float64)  # Σ_t ‖S_t − μ‖², summed over dimensions
        self._seen = np.zeros(self.n, dtype=bool)
        self.epochs = 0

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self._mean.nbytes + self._squares.nbytes + self._seen.nbytes

    def add(self, rows, grads, *, projected: bool = False) -> None:
        """One gradient for each example of ``rows`` in this epoch.

        ``projected=True``: ``grads`` are already of width ``width`` (multiplied by
        ``projection`` by the caller, who may do it more cheaply, e.g. before a matrix product).
        """
        if hasattr(grads, "detach"):
            grads = grads.detach().to("cpu").numpy()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        grads = np.asarray(grads).reshape(len(rows), -1)
        if not projected and self.projection is not None:
            if grads.shape[1] != self.d:
                raise ValueError(f"gradients have {grads.shape[1]} dimensions; expected {self.d}")
            grads = grads.astype(np.float32, copy=False) @ self.projection
        grads = grads.astype(self.dtype, copy=False)
        if grads.shape[1] != self.width:
            raise ValueError(f"gradients have {grads.shape[1]} dimensions; expected {self.width}")
        if self._seen[rows].any():
            raise ValueError("an example got two gradients in one epoch")
        self._seen[rows] = True
        where = _as_slice(rows)
        mean = self._mean[where]  # a view for a contiguous block, else a copy written back below
        count = self.epochs + 1
        delta = grads - mean
        # Welford: (x − μ_old)·(x − μ_new) = ‖δ‖² (c − 1)/c with δ = x − μ_old, c the new count
        self._squares[where] += np.einsum("ij,ij->i", delta, delta) * ((count - 1) / count)
        delta *= 1.0 / count
        mean += delta
        if not isinstance(where, slice):
            self._mean[where] = mean

    def end_epoch(self) -> None:
        if not self._seen.all():
            raise ValueError(f"{int((~self._seen).sum())} examples got no gradient this epoch")
        self._seen[:] = False
        self.epochs += 1

    def raw(self) -> np.ndarray:
        """Mean over dimensions of the (population) variance over epochs; zeros before 2 epochs."""
        if self.epochs < 2:
            return np.zeros(self.n, dtype=np.float64)
        return np.maximum(self._squares, 0.0) / (self.epochs * self.width)


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """A contiguous increasing run of rows as a slice (updated in place), else the rows."""
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (len(rows) == 1 or (np.diff(rows) == 1).all()):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def normalise_within_class(raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The score ``vog``: raw VoG standardised within each gold class (a class whose spread is 0
    gets 0 for all its examples)."""
    raw = np.asarray(raw, dtype=np.float64)
    labels = np.asarray(labels)
    if raw.shape != labels.shape:
        raise ValueError(f"raw VoG has shape {raw.shape} but the labels {labels.shape}")
    out = np.zeros_like(raw)
    for label in np.unique(labels):
        rows = labels == label
        values = raw[rows]
        spread = values.std()
        out[rows] = (values - values.mean()) / spread if spread > 0 else 0.0
    return out
