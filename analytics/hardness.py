"""Summaries of the hardness scores: distributions, correlations, rankings, stability over seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from analytics.scores import SCORES

__all__ = ["HARDER_IS_HIGHER", "numeric_scores", "score_correlations", "quantiles_by_group",
           "hardest", "seed_stability"]

#: For each numeric score column: True when a higher value means a harder (or more suspicious) example.
HARDER_IS_HIGHER = {
    "confidence": False, "variability": True, "correctness": False, "forgetting_events": True,
    "aum": False, "el2n": True, "grand": True, "loss": True, "margin": False, "entropy": True,
    "label_quality": False, "knn_label_disagreement": True, "knn_density": False,
    "outlier_score": True, "knn_shapley": False, "vog": True,
}


def numeric_scores(columns) -> list[str]:
    """The numeric score columns present, in registry order."""
    ordered = [c for score in SCORES.values() for c in score.columns if c in HARDER_IS_HIGHER]
    return [c for c in ordered if c in set(columns)]


def score_correlations(examples: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of score columns (ties averaged)."""
    ranks = examples[columns].rank(method="average")
    return ranks.corr(method="pearson")  # Pearson on ranks is Spearman's rho


def quantiles_by_group(values: pd.Series, groups: pd.Series) -> pd.DataFrame:
    """Box-plot statistics per group without sending every value to the browser:
    count, min, q1, median, q3, max, mean, and the 1.5-IQR whiskers."""
    frame = pd.DataFrame({"value": values.to_numpy(dtype=float), "group": groups.to_numpy()})
    stats = frame.groupby("group", sort=True)["value"].describe(percentiles=[0.25, 0.5, 0.75])
    stats = stats.rename(columns={"25%": "q1", "50%": "median", "75%": "q3"})
    iqr = stats["q3"] - stats["q1"]
    stats["lower_fence"] = np.maximum(stats["min"], stats["q1"] - 1.5 * iqr)
    stats["upper_fence"] = np.minimum(stats["max"], stats["q3"] + 1.5 * iqr)
    return stats.reset_index()


def hardest(examples: pd.DataFrame, score: str, *, n: int = 50) -> pd.DataFrame:
    """The ``n`` hardest examples by ``score`` (using its direction), hardest first."""
    ascending = not HARDER_IS_HIGHER.get(score, True)
    return examples.sort_values(score, ascending=ascending, kind="stable").head(n)


def seed_stability(logits: np.ndarray, labels: np.ndarray, early_epoch: int) -> pd.DataFrame:
    """How stable each dynamics score is across probe seeds.

    Computes confidence, variability, AUM, EL2N and forgetting events per seed and reports the
    mean and minimum Spearman correlation over all pairs of seeds (1 = the same ranking).
    """
    from analytics.scores.training_dynamics import area_under_margin, cartography, el2n, forgetting

    seeds = logits.shape[0]
    if seeds < 2:
        return pd.DataFrame(columns=["score", "mean_spearman", "min_spearman", "seeds"])
    per_seed = []
    for s in range(seeds):
        one = logits[s:s + 1]
        per_seed.append({**cartography(one, labels), **area_under_margin(one, labels),
                         **el2n(one, labels, early_epoch),
                         "forgetting_events": forgetting(one, labels)["forgetting_events"]})
    rows = []
    for name in ("confidence", "variability", "aum", "el2n", "forgetting_events"):
        pairs = [spearmanr(per_seed[a][name], per_seed[b][name]).statistic
                 for a, b in itertools.combinations(range(seeds), 2)]
        pairs = [p for p in pairs if np.isfinite(p)]
        rows.append({"score": name, "mean_spearman": float(np.mean(pairs)) if pairs else np.nan,
                     "min_spearman": float(np.min(pairs)) if pairs else np.nan, "seeds": seeds})
    return pd.DataFrame(rows)
