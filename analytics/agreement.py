"""Inter-rater agreement between reviewers of a session: percent agreement, Cohen's kappa for
a pair of raters, Fleiss' kappa for three or more.

A rating's *category* is the decision, with relabels told apart by their target class
(``keep``, ``drop``, ``flag``, ``relabel:cat``, ``relabel:dog``…): two reviewers who both
relabel an example, to different classes, disagree.

Kappa is undefined when the agreement expected by chance is 1 — every rating falls in one
and the same category, so observed and chance agreement are both 1 and kappa is 0/0. The
functions here return NaN in that case (and when there are no items to compare) rather than
1 or 0: perfect agreement that could not have been otherwise says nothing about the raters.
Percent agreement stays defined (1.0) there.

References
----------
Cohen, J. (1960). A coefficient of agreement for nominal scales. *Educational and
Psychological Measurement*, 20(1), 37–46.
Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters. *Psychological
Bulletin*, 76(5), 378–382.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

__all__ = [
    "AgreementReport",
    "cohen_kappa",
    "decision_categories",
    "fleiss_kappa",
    "percent_agreement",
    "rating_counts",
    "reviewer_agreement",
]

# Expected agreement this close to 1 counts as 1 (kappa undefined), whatever the rounding.
_UNDEFINED_TOLERANCE = 1e-12
PAIR_COLUMNS = ["reviewer_a", "reviewer_b", "n_items", "percent_agreement", "cohen_kappa"]


@dataclass(frozen=True)
class AgreementReport:
    """Agreement among a session's reviewers (see :func:`reviewer_agreement`).

    Attributes
    ----------
    pairs : DataFrame
        One row per pair of reviewers: reviewer_a, reviewer_b, n_items (examples both rated),
        percent_agreement (0–1) and cohen_kappa (NaN when undefined or n_items is 0).
    fleiss_kappa : float or None
        Over the examples every reviewer rated; None with fewer than three reviewers, NaN when
        undefined or when no example was rated by all.
    fleiss_n_items : int
        Examples rated by every reviewer (0 with fewer than three reviewers).
    reviewers : tuple of str
    """

    pairs: pd.DataFrame
    fleiss_kappa: float | None
    fleiss_n_items: int
    reviewers: tuple[str, ...]


def decision_categories(decision, new_label) -> pd.Series:
    """Categories of decisions: the decision itself, or ``relabel:<class>`` for a relabel.

    Parameters
    ----------
    decision : array-like of str, shape (n_decisions,)
    new_label : array-like of str or None, shape (n_decisions,)
    """
    decision = pd.Series(decision, dtype=object).reset_index(drop=True)
    new_label = pd.Series(new_label, dtype=object).reset_index(drop=True)
    if len(decision) != len(new_label):
        raise ValueError(f"decision and new_label differ in length ({len(decision)} vs {len(new_label)}).")
    relabel = decision.eq("relabel")
    return decision.where(~relabel, "relabel:" + new_label.astype(str))


def _paired(rater_a, rater_b) -> tuple[np.ndarray, np.ndarray]:
    """The two raters' ratings on the items both rated (None/NaN means not rated)."""
    a = pd.Series(rater_a, dtype=object).reset_index(drop=True)
    b = pd.Series(rater_b, dtype=object).reset_index(drop=True)
    if len(a) != len(b):
        raise ValueError(f"The two raters' ratings differ in length ({len(a)} vs {len(b)}); "
                         "align them by item first, with None where an item was not rated.")
    both = (a.notna() & b.notna()).to_numpy()
    return a.to_numpy()[both], b.to_numpy()[both]


def percent_agreement(rater_a, rater_b) -> float:
    """Share of the items rated by both raters on which they chose the same category.

    Parameters
    ----------
    rater_a, rater_b : array-like of shape (n_items,)
        Categories; None or NaN where the rater did not rate the item.

    Returns
    -------
    float
        In [0, 1]; NaN when no item was rated by both.
    """
    a, b = _paired(rater_a, rater_b)
    return float(np.mean(a == b)) if len(a) else float("nan")


def cohen_kappa(rater_a, rater_b) -> float:
    """Cohen's kappa, (p_o − p_e) / (1 − p_e), over the items both raters rated (Cohen 1960).

    ``p_o`` is the observed agreement and ``p_e = Σ_k p_a(k) p_b(k)`` the agreement expected
    from each rater's own category frequencies.

    Parameters
    ----------
    rater_a, rater_b : array-like of shape (n_items,)
        Categories; None or NaN where the rater did not rate the item.

    Returns
    -------
    float
        In [−1, 1]; NaN when no item was rated by both or when p_e is 1 (both raters used one
        and the same category throughout), where kappa is undefined.
    """
    a, b = _paired(rater_a, rater_b)
    n = len(a)
    if n == 0:
        return float("nan")
    codes, categories = pd.factorize(np.concatenate([a, b]))
    codes_a, codes_b = codes[:n], codes[n:]
    observed = np.mean(codes_a == codes_b)
    k = len(categories)
    expected = np.bincount(codes_a, minlength=k) @ np.bincount(codes_b, minlength=k) / n**2
    if expected >= 1 - _UNDEFINED_TOLERANCE:
        return float("nan")
    return float((observed - expected) / (1 - expected))


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa for many raters (Fleiss 1971).

    Parameters
    ----------
    counts : array-like of shape (n_items, n_categories)
        ``counts[i, j]``: how many raters put item ``i`` in category ``j``. Every item must have
        the same number of ratings, at least 2.

    Returns
    -------
    float
        ``(P̄ − P̄_e) / (1 − P̄_e)``, where ``P̄`` is the mean over items of the share of agreeing
        rater pairs and ``P̄_e = Σ_j p_j²`` with ``p_j`` the share of all ratings in category
        ``j``. NaN when there are no items, or when ``P̄_e`` is 1 (every rating in one category).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2:
        raise ValueError(f"counts must be a 2-D table (items × categories); got shape {counts.shape}.")
    if counts.shape[0] == 0:
        return float("nan")
    if (counts < 0).any() or not np.all(counts == np.round(counts)):
        raise ValueError("counts must be non-negative whole numbers of ratings.")
    per_item = counts.sum(axis=1)
    n_raters = per_item[0]
    if not np.all(per_item == n_raters):
        raise ValueError("Fleiss' kappa needs the same number of ratings for every item; rows sum to "
                         f"{sorted(set(per_item.astype(int).tolist()))[:10]}. Keep only items every rater rated.")
    if n_raters < 2:
        raise ValueError(f"Fleiss' kappa needs at least 2 ratings per item; got {int(n_raters)}.")
    n_items = counts.shape[0]
    item_agreement = ((counts**2).sum(axis=1) - n_raters) / (n_raters * (n_raters - 1))
    category_share = counts.sum(axis=0) / (n_items * n_raters)
    observed = item_agreement.mean()
    expected = float(np.sum(category_share**2))
    if expected >= 1 - _UNDEFINED_TOLERANCE:
        return float("nan")
    return float((observed - expected) / (1 - expected))


def rating_counts(ratings) -> np.ndarray:
    """Turn a table of ratings into the counts table :func:`fleiss_kappa` takes.

    Parameters
    ----------
    ratings : array-like or DataFrame of shape (n_items, n_raters)
        Each cell a category; every cell must be rated.

    Returns
    -------
    ndarray of shape (n_items, n_categories)
        Categories in order of first appearance (row by row).
    """
    values = np.asarray(ratings, dtype=object)
    if values.ndim != 2:
        raise ValueError(f"ratings must be a 2-D table (items × raters); got shape {values.shape}.")
    if pd.isna(values).any():
        raise ValueError("ratings has unrated cells; keep only items every rater rated.")
    codes, categories = pd.factorize(values.ravel())
    codes = codes.reshape(values.shape)
    counts = np.zeros((values.shape[0], len(categories)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(values.shape[0]), values.shape[1]), codes.ravel()), 1)
    return counts


def reviewer_agreement(current: pd.DataFrame) -> AgreementReport:
    """Pairwise agreement between reviewers, and Fleiss' kappa when there are three or more.

    Parameters
    ----------
    current : DataFrame
        One decision per reviewer per example, as ``ReviewStore.current_decisions`` returns:
        columns ``example_id``, ``reviewer`` and either ``category`` or ``decision`` and
        ``new_label``. Adjudication rows (``kind == "adjudication"``) are left out.

    Returns
    -------
    AgreementReport
        Pairs over the examples both reviewers rated; Fleiss' kappa over the examples all
        rated.
    """
    missing = {"example_id", "reviewer"} - set(current.columns)
    if "category" not in current.columns and not {"decision", "new_label"} <= set(current.columns):
        missing |= {"category (or decision and new_label)"}
    if missing:
        raise ValueError(f"current decisions lack the columns {sorted(missing)}; "
                         f"columns are {list(current.columns)}.")
    if "kind" in current.columns:
        current = current[current["kind"].eq("review")]
    categories = (current["category"].astype(object).reset_index(drop=True) if "category" in current.columns
                  else decision_categories(current["decision"], current["new_label"]))
    frame = pd.DataFrame({"example_id": current["example_id"].astype(str).to_numpy(),
                          "reviewer": current["reviewer"].astype(str).to_numpy(),
                          "category": categories.to_numpy()})
    repeated = frame.duplicated(["example_id", "reviewer"])
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise ValueError(f"Reviewer '{first['reviewer']}' has several decisions on example "
                         f"'{first['example_id']}'; pass the current decisions (the latest per "
                         "reviewer per example), not the history.")
    wide = frame.pivot(index="example_id", columns="reviewer", values="category")
    reviewers = tuple(sorted(wide.columns))
    rows = []
    for reviewer_a, reviewer_b in combinations(reviewers, 2):
        a, b = wide[reviewer_a], wide[reviewer_b]
        rows.append((reviewer_a, reviewer_b, int((a.notna() & b.notna()).sum()),
                     percent_agreement(a, b), cohen_kappa(a, b)))
    pairs = pd.DataFrame(rows, columns=PAIR_COLUMNS).astype(
        {"n_items": np.int64, "percent_agreement": float, "cohen_kappa": float})
    if len(reviewers) < 3:
        return AgreementReport(pairs=pairs, fleiss_kappa=None, fleiss_n_items=0, reviewers=reviewers)
    complete = wide[list(reviewers)].dropna()
    kappa = fleiss_kappa(rating_counts(complete.to_numpy())) if len(complete) else float("nan")
    return AgreementReport(pairs=pairs, fleiss_kappa=kappa, fleiss_n_items=len(complete), reviewers=reviewers)
