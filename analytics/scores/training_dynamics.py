"""Scores from training dynamics: Dataset Cartography, forgetting, AUM, EL2N, GraNd and VoG.

Logits have shape (seeds, epochs, n, K). Scores over epochs are computed per seed and averaged
over seeds (one seed for imported dynamics). Variance of Gradients reads the raw VoG that the
dynamics source accumulated (:mod:`analytics.vog`), already averaged over seeds.
"""

from __future__ import annotations

import numpy as np

from analytics.scores.registry import HIGHER, LOWER, NEITHER, Score, ScoreInputs, register
from analytics.vog import normalise_within_class

__all__ = ["softmax", "cartography", "forgetting", "area_under_margin", "el2n", "grand", "variance_of_gradients"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _gold(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """values[..., i, labels[i]] for arrays shaped (..., n, K)."""
    index = np.broadcast_to(labels[:, None], values.shape[:-1] + (1,))
    return np.take_along_axis(values, index, axis=-1)[..., 0]


def _correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=-1) == labels


def cartography(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Dataset Cartography (Swayamdipta et al., EMNLP 2020).

    confidence  μ_i = (1/E) Σ_e p_e(i)[y_i]                       (higher = easier)
    variability σ_i = sqrt((1/E) Σ_e (p_e(i)[y_i] − μ_i)²)         (population std, as the
                                                                   reference code; higher = ambiguous)
    correctness = (1/E) Σ_e 1[argmax_k z_e(i)[k] = y_i]            (a fraction; the reference
                                                                   code stores the count)
    Averaged over seeds when there are several.
    """
    gold_probability = _gold(softmax(logits), labels)            # (S, E, n)
    confidence = gold_probability.mean(axis=1)
    variability = gold_probability.std(axis=1)                    # ddof=0: population std
    correctness = _correct(logits, labels).mean(axis=1)
    return {"confidence": confidence.mean(0), "variability": variability.mean(0),
            "correctness": correctness.mean(0)}


def forgetting(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Example forgetting (Toneva et al., ICLR 2019).

    forgetting_events: number of epochs e where the example was classified correctly at e−1
    and incorrectly at e (higher = harder), averaged over seeds. never_learned: never correct
    in any epoch of any seed — kept as its own flag rather than a sentinel count.
    """
    correct = _correct(logits, labels)                            # (S, E, n)
    events = (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1)
    return {"forgetting_events": events.mean(0), "never_learned": ~correct.any(axis=(0, 1))}


def area_under_margin(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Area Under the Margin (Pleiss et al., NeurIPS 2020).

    M_e(i) = z_e(i)[y_i] − max_{k≠y_i} z_e(i)[k] on logits; AUM_i = (1/E) Σ_e M_e(i).
    Lower = harder; negative suggests a mislabeled example.
    """
    logits = logits.astype(np.float64)
    assigned = _gold(logits, labels)
    others = logits.copy()
    index = np.broadcast_to(labels[:, None], logits.shape[:-1] + (1,))
    np.put_along_axis(others, index, -np.inf, axis=-1)
    margin = assigned - others.max(axis=-1)
    return {"aum": margin.mean(axis=1).mean(0)}


def _early_error_norm(logits: np.ndarray, labels: np.ndarray, early_epoch: int) -> np.ndarray:
    """‖softmax(z_s(i)) − onehot(y_i)‖₂ at the early epoch, per seed: shape (S, n)."""
    error = softmax(logits[:, early_epoch])                      # (S, n, K)
    error[:, np.arange(len(labels)), labels] -= 1.0
    return np.linalg.norm(error, axis=-1)


def el2n(logits: np.ndarray, labels: np.ndarray, early_epoch: int) -> dict[str, np.ndarray]:
    """EL2N (Paul et al., NeurIPS 2021): (1/S) Σ_s ‖p_s(i) − onehot(y_i)‖₂ at an early epoch.

    Higher = harder (the paper keeps the highest-scoring examples when pruning).
    """
    return {"el2n": _early_error_norm(logits, labels, early_epoch).mean(0)}


def grand(logits: np.ndarray, labels: np.ndarray, early_epoch: int, hidden_norms: np.ndarray) -> dict[str, np.ndarray]:
    """GraNd (Paul et al., NeurIPS 2021) for the last layer, with bias:

    ‖∇_{W,b} ℓ(x_i, y_i)‖₂ = ‖p − onehot(y)‖₂ · sqrt(‖h_i‖₂² + 1), h_i the last layer's input;
    averaged over seeds at the early epoch. Higher = harder. (The gradient of the other layers
    is not included: this is the last-layer GraNd.)
    """
    norms = _early_error_norm(logits, labels, early_epoch) * np.sqrt(hidden_norms.astype(np.float64) + 1.0)
    return {"grand": norms.mean(0)}


def variance_of_gradients(vog_raw: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Variance of Gradients (Agarwal et al., CVPR 2022).

    With S_t(i) = ∂ z_t(i)[y_i] / ∂ x_i the gradient of the gold logit with respect to the
    input at epoch or checkpoint t, the raw score is VoG_i = (1/D) Σ_d (1/T) Σ_t (S_t(i)_d −
    μ_i,d)² (``vog_raw``, see :mod:`analytics.vog`); ``vog`` is that standardised within each
    gold class (minus the class mean, over the class's population std), as in the paper.
    Higher = harder. A class whose raw values are all equal scores 0.
    """
    return {"vog": normalise_within_class(vog_raw, labels)}


register(Score(name="cartography", columns=("confidence", "variability", "correctness"),
               harder={"confidence": LOWER, "variability": HIGHER, "correctness": LOWER},
               requires=("labels", "logits_by_epoch"),
               direction="confidence: lower = harder; variability: higher = ambiguous; correctness: lower = harder",
               reference="Swayamdipta et al., Dataset Cartography, EMNLP 2020",
               description="Mean and spread of the gold-label probability over epochs; fraction of epochs correct.",
               compute=lambda x: cartography(x.logits_by_epoch, x.labels), per_example=True))
register(Score(name="forgetting", columns=("forgetting_events", "never_learned"),
               harder={"forgetting_events": HIGHER, "never_learned": NEITHER}, requires=("labels", "logits_by_epoch"),
               direction="higher = harder; never_learned is a flag",
               reference="Toneva et al., An Empirical Study of Example Forgetting, ICLR 2019",
               description="Times an example went from correct to incorrect between consecutive epochs.",
               compute=lambda x: forgetting(x.logits_by_epoch, x.labels), per_example=True))
register(Score(name="aum", columns=("aum",), harder={"aum": LOWER}, requires=("labels", "logits_by_epoch"),
               direction="lower = harder (negative: likely mislabeled)",
               reference="Pleiss et al., Identifying Mislabeled Data using the Area Under the Margin Ranking, "
                         "NeurIPS 2020",
               description="Mean over epochs of the gold logit minus the largest other logit.",
               compute=lambda x: area_under_margin(x.logits_by_epoch, x.labels), per_example=True))
register(Score(name="el2n", columns=("el2n",), harder={"el2n": HIGHER}, requires=("labels", "logits_by_epoch"),
               direction="higher = harder", reference="Paul et al., Deep Learning on a Data Diet, NeurIPS 2021",
               description="Error L2 norm early in training, averaged over seeds.",
               compute=lambda x: el2n(x.logits_by_epoch, x.labels, x.early_epoch), per_example=True))
register(Score(name="grand", columns=("grand",), harder={"grand": HIGHER},
               requires=("labels", "logits_by_epoch", "hidden_norms"), direction="higher = harder",
               reference="Paul et al., Deep Learning on a Data Diet, NeurIPS 2021",
               description="Last-layer gradient norm early in training, averaged over seeds.",
               compute=lambda x: grand(x.logits_by_epoch, x.labels, x.early_epoch, x.hidden_norms),
               per_example=True))
register(Score(name="vog", columns=("vog",), harder={"vog": HIGHER}, requires=("labels", "vog_raw"),
               direction="higher = harder",
               reference="Agarwal et al., Estimating Example Difficulty Using Variance of Gradients, CVPR 2022",
               description="Variance over epochs of the gradient of the gold logit with respect to the input, "
                           "averaged over input dimensions and standardised within each class.",
               compute=lambda x: variance_of_gradients(x.vog_raw, x.labels),
               per_example=False))  # the class normalisation reads every example of the class
