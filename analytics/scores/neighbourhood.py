"""Scores from the shared k-nearest-neighbour graph: label disagreement, density, KNN-Shapley.

Memory is O(n·k): they read the (n, k) graph the pipeline built once, never an n×n matrix.
"""

from __future__ import annotations

import numpy as np

from analytics.scores.registry import HIGHER, LOWER, Score, ScoreInputs, register

__all__ = ["knn_label_disagreement", "knn_density", "knn_shapley"]


def knn_label_disagreement(indices: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Fraction of the k nearest neighbours whose label differs (higher = harder / suspicious)."""
    return {"knn_label_disagreement": (labels[indices] != labels[:, None]).mean(axis=1)}


def knn_density(distances: np.ndarray) -> dict[str, np.ndarray]:
    """Density and outlier scores after Carlini et al., "Distribution Density, Tails, and
    Outliers in Machine Learning" (2019).

    outlier_score = mean distance to the k nearest neighbours (higher = more of an outlier).
    knn_density   = exp(−outlier_score / median outlier_score), in (0, 1], higher = denser;
                    scale-free, so datasets and metrics compare.
    """
    mean_distance = distances.astype(np.float64).mean(axis=1)
    scale = np.median(mean_distance)
    return {"outlier_score": mean_distance,
            "knn_density": np.exp(-mean_distance / (scale if scale > 0 else 1.0))}


def knn_shapley(indices: np.ndarray, labels: np.ndarray, *, k: int = 5) -> dict[str, np.ndarray]:
    """KNN-Shapley (Jia et al., "Efficient Task-Specific Data Valuation for Nearest Neighbor
    Algorithms", VLDB 2019), truncated to the shared graph.

    Every example v acts as a validation point for its M graph neighbours α_1..α_M (sorted by
    distance; v itself excluded). For a k-NN classifier whose training set is those M points,
    the exact Shapley values are
        s(α_M) = 1[y(α_M) = y_v] / M,
        s(α_i) = s(α_{i+1}) + (1[y(α_i) = y_v] − 1[y(α_{i+1}) = y_v]) / k · min(k, i) / i.
    An example's value is the mean of s over the validation points whose neighbour list holds
    it (0 if none). Truncation: points beyond the M nearest get no credit for v; in the full
    formula their share is at most O(1/i) for rank i > M. Memory O(n·M). Higher = more useful;
    negative values point to harmful (often mislabeled) examples.
    """
    n, m = indices.shape
    match = (labels[indices] == labels[:, None]).astype(np.float64)          # (n, M)
    rank = np.arange(1, m, dtype=np.float64)                                 # i = 1..M-1
    step = (match[:, :-1] - match[:, 1:]) / k * (np.minimum(k, rank) / rank)
    values = np.empty_like(match)
    values[:, -1] = match[:, -1] / m
    values[:, :-1] = values[:, -1:] + np.cumsum(step[:, ::-1], axis=1)[:, ::-1]
    total = np.bincount(indices.ravel(), weights=values.ravel(), minlength=n)
    count = np.bincount(indices.ravel(), minlength=n)
    return {"knn_shapley": np.divide(total, count, out=np.zeros(n), where=count > 0)}


register(Score(name="knn_label_disagreement", columns=("knn_label_disagreement",),
               harder={"knn_label_disagreement": HIGHER}, requires=("labels", "knn"), direction="higher = harder",
               reference="Neighbourhood label agreement on the shared kNN graph",
               description="Share of the nearest neighbours with another label.",
               compute=lambda x: knn_label_disagreement(x.knn_indices, x.labels)))
register(Score(name="knn_density", columns=("knn_density", "outlier_score"),
               harder={"knn_density": LOWER, "outlier_score": HIGHER}, requires=("knn",),
               direction="knn_density: lower = rarer; outlier_score: higher = more of an outlier",
               reference="Carlini et al., Distribution Density, Tails, and Outliers in Machine Learning, 2019",
               description="Mean distance to the nearest neighbours, and a scale-free density from it.",
               compute=lambda x: knn_density(x.knn_distances)))
register(Score(name="knn_shapley", columns=("knn_shapley",), harder={"knn_shapley": LOWER},
               requires=("labels", "knn"), direction="lower = less useful (negative: harmful)",
               reference="Jia et al., Efficient Task-Specific Data Valuation for Nearest Neighbor Algorithms, VLDB 2019",
               description="Exact KNN-Shapley value, truncated to each example's graph neighbours.",
               compute=lambda x: knn_shapley(x.knn_indices, x.labels)))
