"""Variance of Gradients (Agarwal et al., CVPR 2022), accumulated one epoch at a time.

At each epoch (or checkpoint) t, every example i contributes S_t(i) = ∂ logit_gold / ∂ x, the
gradient of its gold-class logit with respect to the input the model sees (the embedding for a
probe, the pixels or the input embeddings when fine-tuning, the model input for checkpoints).
The raw score is the mean over input dimensions of the variance over t of S_t(i)::

    VoG_i = 1/D Σ_d  1/T Σ_t (S_t(i)_d − μ_i,d)²,   μ_i,d = 1/T Σ_t S_t(i)_d

and the paper normalises it within each class (subtract the class mean, divide by the class
standard deviation), so classes are comparable. Higher = harder.

:class:`VogAccumulator` keeps running sums per example and dimension (float64, 2 × n × d), so the
gradients of an epoch never need to be held at once; :func:`normalise_within_class` gives the
score column ``vog``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["VogAccumulator", "normalise_within_class"]


class VogAccumulator:
    """Running first and second moments of each example's input gradient over epochs.

    ``add(rows, grads)`` during an epoch (``grads`` of shape (len(rows), d): torch tensor or
    ndarray), ``end_epoch()`` after it; every example must get exactly one gradient per epoch.
    ``raw()`` is the unnormalised VoG of every example, shape (n,).
    """

    def __init__(self, n: int, d: int):
        self.n, self.d = int(n), int(d)
        self._sum = np.zeros((self.n, self.d), dtype=np.float64)
        self._sumsq = np.zeros((self.n, self.d), dtype=np.float64)
        self._seen = np.zeros(self.n, dtype=bool)
        self.epochs = 0

    def add(self, rows, grads) -> None:
        if hasattr(grads, "detach"):
            grads = grads.detach().to("cpu").numpy()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        grads = np.asarray(grads, dtype=np.float64).reshape(len(rows), -1)
        if grads.shape[1] != self.d:
            raise ValueError(f"gradients have {grads.shape[1]} dimensions; expected {self.d}")
        if self._seen[rows].any():
            raise ValueError("an example got two gradients in one epoch")
        self._seen[rows] = True
        self._sum[rows] += grads
        self._sumsq[rows] += grads * grads

    def end_epoch(self) -> None:
        if not self._seen.all():
            raise ValueError(f"{int((~self._seen).sum())} examples got no gradient this epoch")
        self._seen[:] = False
        self.epochs += 1

    def raw(self) -> np.ndarray:
        """Mean over dimensions of the (population) variance over epochs; zeros before 2 epochs."""
        if self.epochs < 2:
            return np.zeros(self.n, dtype=np.float64)
        mean = self._sum / self.epochs
        variance = np.maximum(self._sumsq / self.epochs - mean * mean, 0.0)
        return variance.mean(axis=1)


def normalise_within_class(raw: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The score ``vog``: raw VoG standardised within each gold class (a class whose spread is 0
    gets 0 for all its examples)."""
    raw = np.asarray(raw, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.zeros_like(raw)
    for label in np.unique(labels):
        rows = labels == label
        values = raw[rows]
        spread = values.std()
        out[rows] = (values - values.mean()) / spread if spread > 0 else 0.0
    return out
