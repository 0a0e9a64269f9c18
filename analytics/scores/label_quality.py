"""Scores from held-out (out-of-fold) probabilities: loss, margin, entropy, confident learning."""

from __future__ import annotations

import numpy as np

from analytics.scores.registry import HIGHER, LOWER, NEITHER, Score, ScoreInputs, register

__all__ = ["heldout_scores", "confident_learning"]

_EPS = 1e-12


def heldout_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """loss    = −log p(i)[y_i]                        (higher = harder)
    margin  = p(i)[y_i] − max_{k≠y_i} p(i)[k]         (lower = harder; negative = misclassified)
    entropy = −Σ_k p(i)[k] log p(i)[k]                (higher = the model is unsure)
    on out-of-fold probabilities, so no example is scored by a model that trained on it.
    """
    probs = probs.astype(np.float64)
    rows = np.arange(len(labels))
    gold = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    return {"loss": -np.log(np.clip(gold, _EPS, 1.0)),
            "margin": gold - others.max(axis=1),
            "entropy": -(probs * np.log(np.clip(probs, _EPS, 1.0))).sum(axis=1)}


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Confident learning (Northcutt et al., JAIR 2021) through the cleanlab library.

    label_quality: ``cleanlab.rank.get_label_quality_scores`` (self-confidence; lower = more
    likely a label error). label_issue: ``cleanlab.filter.find_label_issues`` (a flag).
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    # cleanlab needs every class to appear among the labels; with a class never used as a
    # label (possible in a subset) the flag cannot be computed and is left False.
    present = np.bincount(labels, minlength=probs.shape[1]) > 0
    if present.all() and len(labels) > probs.shape[1]:
        issues = find_label_issues(labels, probs, n_jobs=1)
    else:
        issues = np.zeros(len(labels), dtype=bool)
    return {"label_quality": quality, "label_issue": issues}


register(Score(name="heldout", columns=("loss", "margin", "entropy"),
               harder={"loss": HIGHER, "margin": LOWER, "entropy": HIGHER}, requires=("labels", "heldout_probs"),
               direction="loss, entropy: higher = harder; margin: lower = harder",
               reference="Held-out (cross-fitted) predictions",
               description="Cross-entropy, probability margin and entropy of out-of-fold predictions.",
               compute=lambda x: heldout_scores(x.heldout_probs, x.labels), per_example=True))
register(Score(name="confident_learning", columns=("label_quality", "label_issue"),
               harder={"label_quality": LOWER, "label_issue": NEITHER}, requires=("labels", "heldout_probs"),
               direction="label_quality: lower = likely label error; label_issue is a flag",
               reference="Northcutt et al., Confident Learning, JAIR 2021 (cleanlab)",
               description="cleanlab's label quality score and label-issue flag from out-of-fold probabilities.",
               compute=lambda x: confident_learning(x.heldout_probs, x.labels)))
