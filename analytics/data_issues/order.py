"""Does the order of the rows (or a date column) carry information? cleanlab Datalab's non-IID test.

For every edge i → j of the shared kNN graph take the index distance |i − j|. If the rows were
in random order, these distances would follow the distribution of |i − j| for a random pair,
P(d) = (n − d) / (n(n − 1)/2), d = 1 … n − 1. The statistic is the Kolmogorov–Smirnov distance
between the empirical distribution of the graph's index distances and P (Datalab's
``simplified_kolmogorov_smirnov_test``, evaluated as Datalab evaluates it). The p-value comes
from a permutation test: the same statistic for ``num_permutations`` random reorderings of the
rows (Datalab's default 25, drawn from ``numpy.random.RandomState(seed)`` as Datalab draws
them), a Gaussian kernel density fitted to them, and its mass above the observed statistic.
A small p-value means neighbours in feature space sit close together in the file: drift,
sorting, batches.

The per-example ``non_iid_score`` is Datalab's: the area between the example's empirical CDF
of its neighbours' index distances and the CDF expected under random order (computed in
closed form), divided by the largest possible distance from that row, mapped to (0, 1] by
``1 + tanh(−x)``. Lower = its neighbours sit unusually close to it in the file.

Along a date or time column the same test runs with each row's rank in time order in place of
its index (ties broken at random, so only the time carries information).

Work is O(n·k) per permutation with bincounts in place of Datalab's sorts (identical
statistic), and per-example scores run over blocks of rows: nothing is n×n and no
(permutations × n × k) array is built.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

__all__ = ["non_iid_statistic", "permutation_statistics", "non_iid_test", "non_iid_scores", "time_columns", "time_positions",
           "check_order"]

_TIME_NAME = re.compile(r"date|time|year|created|updated|modified", re.IGNORECASE)


def _background_cdf(n: int) -> np.ndarray:
    """F(d) = P(|i − j| ≤ d) for a random pair of rows, d = 0 … n − 1."""
    d = np.arange(n, dtype=np.float64)
    return (d * n - d * (d + 1) / 2) / (n * (n - 1) / 2)


def non_iid_statistic(index_distances: np.ndarray, n: int, background: np.ndarray | None = None) -> float:
    """Datalab's KS statistic of the index distances (any shape, values in 1 … n − 1).

    Datalab sorts the m distances s_0 ≤ … ≤ s_{m−1} and takes max_t |t/m − F(s_t)|. Over a run
    of equal values d (positions a … a + c − 1) the largest term sits at an end of the run, so a
    bincount gives the same value without sorting.
    """
    background = _background_cdf(n) if background is None else background
    counts = np.bincount(np.ravel(index_distances), minlength=n)
    m = counts.sum()
    present = np.flatnonzero(counts)
    below = (np.cumsum(counts) - counts)[present]
    cdf = background[present]
    first = np.abs(below / m - cdf)
    last = np.abs((below + counts[present] - 1) / m - cdf)
    return float(max(first.max(), last.max()))


def _index_distances(knn_indices: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    if positions is None:
        return np.abs(np.arange(len(knn_indices), dtype=np.int32)[:, None] - knn_indices.astype(np.int32))
    return np.abs(positions[:, None] - positions[knn_indices])


def permutation_statistics(knn_indices: np.ndarray, *, num_permutations: int = 25, seed: int = 0) -> np.ndarray:
    """The statistic for ``num_permutations`` random orders of the rows, drawn as Datalab draws
    them (``numpy.random.RandomState(seed).permutation(n)`` in turn): the null distribution,
    the same whichever order is tested, so one set serves the row order and every date column."""
    n = len(knn_indices)
    background = _background_cdf(n)
    rng = np.random.RandomState(seed)
    return np.array([non_iid_statistic(_index_distances(knn_indices, rng.permutation(n).astype(np.int32)),
                                       n, background)
                     for _ in range(num_permutations)])


def non_iid_test(knn_indices: np.ndarray, *, positions: np.ndarray | None = None, num_permutations: int = 25,
                 seed: int = 0, permuted: np.ndarray | None = None) -> dict:
    """Permutation test of the row order (or of ``positions``) against random order.

    Parameters
    ----------
    knn_indices : ndarray of shape (n, k)
        The shared neighbour graph (self excluded).
    positions : ndarray of shape (n,), optional
        Where each row sits in the order tested (a permutation of 0 … n − 1); the row order
        by default.
    num_permutations : int, default 25 (Datalab's)
    seed : int, default 0 (Datalab's)
    permuted : ndarray, optional
        :func:`permutation_statistics` already computed for this graph.

    Returns
    -------
    dict with ``p_value``, ``statistic`` and ``permutation_statistics`` (their mean and max).
    """
    n = len(knn_indices)
    positions = None if positions is None else np.asarray(positions, dtype=np.int32)
    observed = non_iid_statistic(_index_distances(knn_indices, positions), n)
    if permuted is None:
        permuted = permutation_statistics(knn_indices, num_permutations=num_permutations, seed=seed)
    try:
        from scipy.stats import gaussian_kde  # here: scipy.stats costs ~0.4 s at import

        p_value = float(gaussian_kde(permuted).integrate_box_1d(observed, 100))
    except (np.linalg.LinAlgError, ValueError):  # permuted statistics all equal (tiny n)
        p_value = float((np.sum(permuted >= observed) + 1) / (len(permuted) + 1))
    return {"p_value": min(max(p_value, 0.0), 1.0), "statistic": observed,
            "permutation_statistics": {"mean": float(permuted.mean()), "max": float(permuted.max())},
            "permutations": len(permuted), "seed": seed}


def _example_scores(distances: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Datalab's ``NonIIDIssueManager._score_dataset`` for a block of rows: ``distances`` (b, k)
    index distances of each row's neighbours, ``index`` (b,) the rows' own positions."""
    b, k = distances.shape
    middle = (n - 1) // 2
    double = np.where(index > middle, np.abs(index - (n - 1)), index).astype(np.int64)[:, None]
    ends = np.hstack([np.sort(distances, axis=1), np.full((b, 1), n - 1)]).astype(np.int64)
    beginning = ends <= double
    end = ends > n - double - 1
    previous = np.zeros_like(ends)
    previous[:, 1:] = ends[:, :-1]
    steps = ends - previous
    area_beginning = double ** 2 / (n - 1)
    area_middle = 0.5 * (2 * double / (n - 1) + 1) * (n - 2 * double - 1)
    area = np.where(beginning, ends ** 2 / (n - 1),
                    np.where(end, area_beginning + area_middle + (ends - (n - double - 1)),
                             area_beginning + 0.5 * (ends + 3 * double) * (ends - double) / (n - 1)))
    area_steps = area.copy()
    area_steps[:, 1:] -= area[:, :-1]
    foreground = np.arange(k + 1) / k * steps
    statistic = np.abs(foreground - area_steps).sum(axis=1)
    normaliser = np.maximum(index, n - index)
    return np.tanh(-statistic / normaliser) + 1


def non_iid_scores(knn_indices: np.ndarray, *, positions: np.ndarray | None = None,
                   block: int = 65_536) -> np.ndarray:
    """Datalab's per-example non-IID score, in (0, 1]; lower = the example's neighbours sit
    closer to it in the order than chance.

    Returns
    -------
    ndarray of shape (n,), float64
    """
    n = len(knn_indices)
    positions = np.arange(n, dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
    scores = np.empty(n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        own = positions[rows]
        scores[rows] = _example_scores(np.abs(own[:, None] - positions[knn_indices[rows]]), own, n)
    return scores


def time_columns(table: pd.DataFrame, columns: list[str]) -> list[str]:
    """Columns that hold dates or times: a datetime dtype, or a name that says so (date, time,
    year, created, updated, modified) with values that are numbers or parse as dates."""
    found = []
    for name in columns:
        values = table[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            found.append(name)
        elif _TIME_NAME.search(str(name)) and _time_values(values) is not None:
            found.append(name)
    return found


def _time_values(values: pd.Series) -> np.ndarray | None:
    """float64 times (NaN where missing), or None when under 95% of the rows have one."""
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_numeric_dtype(values):
        times = values.astype(np.float64).to_numpy(copy=True)
    else:
        parsed = values
        if not pd.api.types.is_datetime64_any_dtype(values):
            # one format, guessed from the first value, parsed at once: never dateutil's guess
            # per value, which takes minutes at a million rows
            known = values.dropna()
            guessed = guess_datetime_format(str(known.iloc[0])) if len(known) else None
            if guessed is None:
                return None
            parsed = pd.to_datetime(values, format=guessed, errors="coerce")
        times = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        times[parsed.isna().to_numpy()] = np.nan
    return times if len(times) and np.isfinite(times).mean() >= 0.95 else None


def time_positions(values: pd.Series, *, seed: int = 0) -> np.ndarray | None:
    """Each row's rank in time order (ties and missing times, which go last, in random order),
    or None when the column has too few times."""
    times = _time_values(values)
    if times is None:
        return None
    tie_break = np.random.default_rng(seed).permutation(len(times))
    order = np.lexsort((tie_break, np.nan_to_num(times, nan=np.inf)))
    positions = np.empty(len(times), np.int64)
    positions[order] = np.arange(len(times))
    return positions


def check_order(knn_indices: np.ndarray, *, table: pd.DataFrame | None = None, time_candidates: list[str] = (),
                num_permutations: int = 25, seed: int = 0, significance: float = 0.05,
                null_quantile: float = 0.01) -> tuple[np.ndarray, np.ndarray, dict]:
    """The row-order test, per-example scores, and the same test along each time column.

    Examples are flagged when the test is significant (p < ``significance``) and their score
    falls below the ``null_quantile`` of the scores the same graph gets in one random order
    (so about 1% of the examples would be flagged in a random order).

    Returns
    -------
    scores : ndarray of shape (n,)
    flagged : ndarray of shape (n,), bool
    info : dict
    """
    n = len(knn_indices)
    permuted = permutation_statistics(knn_indices, num_permutations=num_permutations, seed=seed)
    test = non_iid_test(knn_indices, seed=seed, permuted=permuted)
    scores = non_iid_scores(knn_indices)
    null = non_iid_scores(knn_indices, positions=np.random.RandomState(seed + 1).permutation(n))
    cut = float(np.quantile(null, null_quantile))
    flagged = (scores < cut) if test["p_value"] < significance else np.zeros(n, bool)
    info = {**test, "significance": significance, "score_cut": cut, "null_quantile": null_quantile,
            "k": int(knn_indices.shape[1]), "time_columns": {}}
    for name in time_candidates:
        positions = time_positions(table[name], seed=seed)
        if positions is not None:
            column_test = non_iid_test(knn_indices, positions=positions, seed=seed, permuted=permuted)
            info["time_columns"][str(name)] = {key: column_test[key] for key in ("p_value", "statistic")}
    return scores, flagged, info
