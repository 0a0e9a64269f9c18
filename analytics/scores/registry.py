"""The registry of per-example scores: what each needs, what it means, where it comes from.

Every score declares the inputs it requires; :func:`compute_scores` runs those whose inputs are
present, so the pipeline computes what it can and the UI lists what exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable

import numpy as np
import pandas as pd

__all__ = ["Score", "ScoreInputs", "SCORES", "register", "compute_scores", "available_scores", "INPUTS",
           "HIGHER", "LOWER", "NEITHER", "HARDER", "UnknownScoreError", "score_columns", "harder_is_higher",
           "numeric_score_columns"]

INPUTS = ("labels", "logits_by_epoch", "heldout_probs", "knn", "hidden_norms", "vog_raw")

#: What a score column says about an example: harder when the value is higher, when it is lower,
#: or neither (a flag, such as ``label_issue``).
HIGHER, LOWER, NEITHER = "higher", "lower", "neither"
HARDER = (HIGHER, LOWER, NEITHER)

# The shape of each array input, by axis name; "n" is the number of examples.
_SHAPES = {"labels": ("n",), "logits_by_epoch": ("seeds", "epochs", "n", "classes"),
           "heldout_probs": ("n", "classes"), "knn_indices": ("n", "k"), "knn_distances": ("n", "k"),
           "hidden_norms": ("seeds", "n"), "vog_raw": ("n",)}


class UnknownScoreError(KeyError):
    """A score column that no registered score declares."""

    def __init__(self, column: str):
        super().__init__(column)
        self.column = column

    def __str__(self) -> str:
        known = ", ".join(score_columns()) or "none"
        return f"'{self.column}' is not a registered score column (registered: {known})"


@dataclass(frozen=True, eq=False)
class ScoreInputs:
    """Everything scores may read. Missing inputs are None.

    Every array is checked against the others' sizes: a ValueError names the input and the
    shapes that disagree.

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

    def __post_init__(self):
        sizes: dict[str, tuple[int, str]] = {}  # axis name → (size, the input that set it)
        for name, axes in _SHAPES.items():
            value = getattr(self, name)
            if value is None:
                continue
            shape = np.shape(value)
            if len(shape) != len(axes):
                raise ValueError(f"ScoreInputs: {name} must have shape ({', '.join(axes)}), not {shape}")
            for axis, size in zip(axes, shape):
                if axis in sizes and sizes[axis][0] != size:
                    first, source = sizes[axis]
                    raise ValueError(f"ScoreInputs: {name} has shape {shape}, whose {axis} ({size}) differs "
                                     f"from {source}'s ({first})")
                sizes.setdefault(axis, (size, name))

    def has(self, name: str) -> bool:
        if name == "labels":
            return self.labels is not None
        if name == "knn":
            return self.knn_indices is not None and self.knn_distances is not None
        return getattr(self, name) is not None


@dataclass(kw_only=True, frozen=True, eq=False)
class Score:
    """A per-example score (one or more columns of ``examples.parquet``).

    ``harder`` declares, for every column, when an example is harder (or more suspicious):
    :data:`HIGHER`, :data:`LOWER`, or :data:`NEITHER` (a flag). Every direction the app and the
    engine use is read from it (:func:`harder_is_higher`). ``direction`` says the same in words,
    with what the extremes mean, for people.
    """

    name: str
    columns: tuple[str, ...]
    harder: Mapping[str, str]
    requires: tuple[str, ...]
    direction: str
    reference: str
    description: str
    compute: Callable[[ScoreInputs], dict[str, np.ndarray]] = field(repr=False)
    per_example: bool = False  # True: row i depends only on example i, so it can run in blocks

    def __post_init__(self):
        if set(self.harder) != set(self.columns):
            raise ValueError(f"score {self.name}: harder must name each of its columns {list(self.columns)} "
                             f"once, not {list(self.harder)}")
        wrong = {c: h for c, h in self.harder.items() if h not in HARDER}
        if wrong:
            raise ValueError(f"score {self.name}: harder must be one of {', '.join(HARDER)}, not {wrong}")
        unknown = set(self.requires) - set(INPUTS)
        if unknown:
            raise ValueError(f"score {self.name} requires unknown inputs {sorted(unknown)}")
        for text in ("direction", "reference", "description"):
            if not getattr(self, text).strip():
                raise ValueError(f"score {self.name}: {text} must not be empty")
        object.__setattr__(self, "harder", MappingProxyType({c: self.harder[c] for c in self.columns}))


SCORES: dict[str, Score] = {}


def register(score: Score) -> Score:
    """Add ``score`` to :data:`SCORES`; its columns must not be another score's."""
    taken = {c: other.name for other in SCORES.values() if other.name != score.name for c in other.columns}
    clash = [c for c in score.columns if c in taken]
    if clash:
        raise ValueError(f"score {score.name}: column {clash[0]} is already score {taken[clash[0]]}'s")
    SCORES[score.name] = score
    return score


def score_columns() -> dict[str, str]:
    """Every registered score column and when it is harder (:data:`HARDER`), in registry order."""
    return {column: harder for score in SCORES.values() for column, harder in score.harder.items()}


def numeric_score_columns() -> list[str]:
    """The registered columns with a direction (flags left out), in registry order."""
    return [column for column, harder in score_columns().items() if harder != NEITHER]


def harder_is_higher(column: str) -> bool:
    """True when a higher value of the score ``column`` means a harder example.

    Raises
    ------
    UnknownScoreError
        No registered score has this column.
    ValueError
        The column is a flag (neither direction).
    """
    harder = score_columns().get(column)
    if harder is None:
        raise UnknownScoreError(column)
    if harder == NEITHER:
        raise ValueError(f"'{column}' is a flag: neither a higher nor a lower value means harder")
    return harder == HIGHER


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
