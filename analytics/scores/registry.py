"""The registry of per-example scores: what each needs, what it means, where it comes from.

Every score declares the inputs it requires; :func:`compute_scores` runs those whose inputs are
present, so the pipeline computes what it can and the UI lists what exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["Score", "ScoreInputs", "SCORES", "register", "compute_scores", "available_scores", "INPUTS"]

INPUTS = ("labels", "logits_by_epoch", "heldout_probs", "knn", "hidden_norms", "vog_raw")


@dataclass(frozen=True, eq=False)
class ScoreInputs:
    """Everything scores may read. Missing inputs are None.

    labels : (n,) int — gold label index
    logits_by_epoch : (seeds, epochs, n, K) float32 — training dynamics
    early_epoch : int — the epoch taken as early in training (EL2N, GraNd)
    heldout_probs : (n, K) float32 — out-of-fold probabilities
    knn_indices, knn_distances : (n, k) — the shared neighbour graph (self excluded)
    hidden_norms : (seeds, n) — squared norm of the last layer's input at the early epoch
    vog_raw : (n,) — raw Variance of Gradients over epochs (see analytics.vog)
    """

    labels: np.ndarray
    logits_by_epoch: np.ndarray | None = None
    early_epoch: int = 0
    heldout_probs: np.ndarray | None = None
    knn_indices: np.ndarray | None = None
    knn_distances: np.ndarray | None = None
    hidden_norms: np.ndarray | None = None
    vog_raw: np.ndarray | None = None

    def has(self, name: str) -> bool:
        if name == "labels":
            return self.labels is not None
        if name == "knn":
            return self.knn_indices is not None and self.knn_distances is not None
        return getattr(self, name) is not None


@dataclass(frozen=True)
class Score:
    """A per-example score (one or more columns of ``examples.parquet``).

    ``direction`` says how to read it: "higher = harder", "lower = harder", or "flag".
    """

    name: str
    columns: tuple[str, ...]
    requires: tuple[str, ...]
    direction: str
    reference: str
    compute: Callable[[ScoreInputs], dict[str, np.ndarray]] = field(repr=False)
    description: str = ""
    per_example: bool = False  # True: row i depends only on example i, so it can run in blocks


SCORES: dict[str, Score] = {}


def register(score: Score) -> Score:
    unknown = set(score.requires) - set(INPUTS)
    if unknown:
        raise ValueError(f"score {score.name} requires unknown inputs {unknown}")
    SCORES[score.name] = score
    return score


def available_scores(inputs: ScoreInputs) -> list[Score]:
    return [s for s in SCORES.values() if all(inputs.has(r) for r in s.requires)]


def _block(inputs: ScoreInputs, rows: slice) -> ScoreInputs:
    """The inputs of examples ``rows`` only (per-example scores)."""
    def cut(array, axis):
        return None if array is None else np.take(array, np.arange(rows.start, rows.stop), axis=axis)

    return ScoreInputs(labels=inputs.labels[rows], logits_by_epoch=cut(inputs.logits_by_epoch, 2),
                       early_epoch=inputs.early_epoch, heldout_probs=cut(inputs.heldout_probs, 0),
                       hidden_norms=cut(inputs.hidden_norms, 1), vog_raw=cut(inputs.vog_raw, 0))


def compute_scores(inputs: ScoreInputs, *, progress: Callable[[float, str], None] | None = None,
                   block: int = 100_000) -> pd.DataFrame:
    """Every registered score whose inputs are present, as columns of one table (row i = example i).

    Per-example scores run over blocks of ``block`` examples, so their float64 temporaries stay
    bounded (at 1M examples × 10 epochs × 3 seeds one softmax over everything is 2.4 GB).
    """
    progress = progress or (lambda fraction, message: None)
    runnable = available_scores(inputs)
    n = len(inputs.labels)
    columns: dict[str, np.ndarray] = {}
    for i, score in enumerate(runnable):
        progress(i / max(len(runnable), 1), f"Scoring: {score.name}")
        if score.per_example and n > block:
            parts = [score.compute(_block(inputs, slice(start, min(start + block, n))))
                     for start in range(0, n, block)]
            for name in score.columns:
                columns[name] = np.concatenate([np.asarray(part[name]) for part in parts])
        else:
            for name, values in score.compute(inputs).items():
                columns[name] = np.asarray(values)
    return pd.DataFrame(columns)
