"""Summaries of the hardness scores: distributions, correlations, rankings, stability over seeds.

The summaries over every row (the score-agreement matrix, the box-plot statistics per group,
the stability across seeds) are computed once per run by the pipeline and written as run files
(:data:`HARDNESS_FILES`, built by :func:`hardness_tables`); the pages read those and compute
them here only for runs written before them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from analytics.scores import ScoreInputs, compute_scores, harder_is_higher, numeric_score_columns

__all__ = ["HARDER_IS_HIGHER", "numeric_scores", "score_agreement", "score_correlations", "score_quantiles",
           "quantiles_by_group", "hardest", "seed_stability", "hardness_tables", "QUANTILE_COLUMNS",
           "GROUPINGS", "SCORE_AGREEMENT_FILE", "SCORE_QUANTILES_FILE", "SEED_STABILITY_FILE",
           "HARDNESS_FILES"]



class _HarderIsHigher(Mapping):
    """A read-only view of the score registry's directions (flags left out)."""

    def __getitem__(self, column: str) -> bool:
        try:
            return harder_is_higher(column)
        except ValueError as exc:  # a flag: not a key of this mapping
            raise KeyError(str(exc)) from None

    def __contains__(self, column: object) -> bool:
        return column in numeric_score_columns()

    def __iter__(self) -> Iterator[str]:
        return iter(numeric_score_columns())

    def __len__(self) -> int:
        return len(numeric_score_columns())


#: For each numeric score column: True when a higher value means a harder (or more suspicious)
#: example. Read from each score's declaration (:class:`analytics.scores.Score` ``harder``); an
#: unknown column raises :class:`analytics.scores.UnknownScoreError`.
HARDER_IS_HIGHER: Mapping[str, bool] = _HarderIsHigher()

#: The box-plot statistics of one group, in the order of :func:`quantiles_by_group`'s columns.
QUANTILE_COLUMNS = ("count", "min", "q1", "median", "q3", "max", "mean", "lower_fence", "upper_fence")
#: The columns the Hardness page groups a score's distribution by, when the run has them.
GROUPINGS = ("label", "region", "split", "cluster")

SCORE_AGREEMENT_FILE = "score_agreement.parquet"
SCORE_QUANTILES_FILE = "score_quantiles.parquet"
SEED_STABILITY_FILE = "seed_stability.parquet"
HARDNESS_FILES = (SCORE_AGREEMENT_FILE, SCORE_QUANTILES_FILE, SEED_STABILITY_FILE)

_GRAM_BLOCK = 1 << 16  # rows per block of the rank products (float64 blocks of a few MB)


def numeric_scores(columns) -> list[str]:
    """The numeric score columns present (flags left out), in registry order."""
    present = set(columns)
    return [c for c in numeric_score_columns() if c in present]


def _centred_ranks(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Average ranks of ``values`` minus their mean, as float32, and their sum of squares.

    Ranks up to 2**23 and their halves (ties) are exact in float32, and so are they minus
    (n + 1) / 2, the mean of the ranks 1..n.
    """
    ranks = rankdata(values, method="average").astype(np.float32)
    ranks -= np.float32((len(values) + 1) / 2)
    return ranks, float(np.dot(ranks.astype(np.float64), ranks.astype(np.float64)))


def _rank_gram(centred: np.ndarray) -> np.ndarray:
    """``centred.T @ centred`` accumulated in float64 over blocks of rows."""
    gram = np.zeros((centred.shape[1], centred.shape[1]))
    for start in range(0, len(centred), _GRAM_BLOCK):
        block = centred[start:start + _GRAM_BLOCK].astype(np.float64)
        gram += block.T @ block
    return gram


def _pair_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two columns over the rows where both are present."""
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 2:
        return np.nan
    ra, sa = _centred_ranks(a[keep])
    rb, sb = _centred_ranks(b[keep])
    if sa == 0 or sb == 0:
        return np.nan
    return float(np.dot(ra.astype(np.float64), rb.astype(np.float64)) / np.sqrt(sa * sb))


def score_agreement(examples: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Spearman's rank correlation between every pair of score columns, over every row.

    Ties get average ranks. A column with missing values is compared with each other column over
    the rows where both have a value, ranked again on those rows. Each complete column is ranked
    once and every pair of them comes from one product of the rank matrix (16 scores over 1M
    rows: 2.2 s of CPU, against 3.9 s for ``DataFrame.rank().corr()``).

    Parameters
    ----------
    examples : DataFrame
        One row per example, holding ``columns`` (numeric).
    columns : sequence of str
        The score columns to compare.

    Returns
    -------
    DataFrame of shape (len(columns), len(columns))
        rho for each pair, indexed and labelled by the column names (index name ``score``);
        1 on the diagonal, NaN for a constant column or a pair sharing fewer than two rows.
    """
    columns = list(columns)
    missing = [c for c in columns if c not in examples.columns]
    if missing:
        raise KeyError(f"score_agreement: no column {', '.join(map(repr, missing))} in the examples")
    values = {c: examples[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in columns}
    complete = [c for c in columns if not np.isnan(values[c]).any()]
    rho = np.full((len(columns), len(columns)), np.nan)
    position = {c: i for i, c in enumerate(columns)}
    if complete and len(examples) > 1:
        centred = np.empty((len(examples), len(complete)), dtype=np.float32)
        squares = np.empty(len(complete))
        for j, column in enumerate(complete):
            centred[:, j], squares[j] = _centred_ranks(values[column])
        with np.errstate(divide="ignore", invalid="ignore"):
            block = _rank_gram(centred) / np.sqrt(np.outer(squares, squares))
        index = [position[c] for c in complete]
        rho[np.ix_(index, index)] = block
    for a, b in itertools.combinations(columns, 2):
        if a not in complete or b not in complete:
            rho[position[a], position[b]] = rho[position[b], position[a]] = _pair_spearman(values[a], values[b])
    for column in columns:  # a column agrees with itself, unless it is constant or (nearly) empty
        i = position[column]
        present = values[column][~np.isnan(values[column])]
        rho[i, i] = 1.0 if len(present) > 1 and present.min() < present.max() else np.nan
    frame = pd.DataFrame(np.clip(rho, -1.0, 1.0), index=pd.Index(columns, name="score"), columns=columns)
    return frame


def score_correlations(examples: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Spearman rank correlation between every pair of score columns (see :func:`score_agreement`)."""
    return score_agreement(examples, columns)


def _group_codes(groups: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group as an index into the group names (as text, sorted), and the names."""
    codes, names = pd.factorize(groups.astype(str).to_numpy(dtype=object), sort=True)
    return codes, np.asarray(names, dtype=object)


def _segment_stats(values: np.ndarray) -> list[float]:
    """The :data:`QUANTILE_COLUMNS` of one group's values (NaN dropped)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return [0] + [np.nan] * (len(QUANTILE_COLUMNS) - 1)
    low, q1, median, q3, high = np.percentile(values, [0, 25, 50, 75, 100])
    iqr = q3 - q1
    return [len(values), low, q1, median, q3, high, float(values.mean()),
            max(low, q1 - 1.5 * iqr), min(high, q3 + 1.5 * iqr)]


def _grouped_stats(values: np.ndarray, order: np.ndarray, bounds: np.ndarray) -> list[list[float]]:
    ordered = values[order]
    return [_segment_stats(ordered[bounds[g]:bounds[g + 1]]) for g in range(len(bounds) - 1)]


def _group_order(codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows sorted by group, and where each group starts in that order."""
    order = np.argsort(codes, kind="stable")
    return order, np.searchsorted(codes[order], np.arange(n_groups + 1))


def _stats_frame(names: np.ndarray, rows: list[list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(QUANTILE_COLUMNS))
    frame.insert(0, "group", names)
    return frame.astype({"count": np.int64})


def quantiles_by_group(values: pd.Series, groups: pd.Series) -> pd.DataFrame:
    """Box-plot statistics per group without sending every value to the browser.

    Parameters
    ----------
    values : Series of shape (n,)
        One score.
    groups : Series of shape (n,)
        Each row's group (compared as text).

    Returns
    -------
    DataFrame
        One row per group, sorted by name: ``group`` and the :data:`QUANTILE_COLUMNS` — count
        (values present), min, q1, median, q3, max (linear interpolation, as ``np.percentile``),
        mean, and the 1.5-IQR whiskers clipped to the data (``lower_fence``, ``upper_fence``).
    """
    if len(values) != len(groups):
        raise ValueError(f"quantiles_by_group: {len(values)} values but {len(groups)} groups")
    codes, names = _group_codes(groups)
    order, bounds = _group_order(codes, len(names))
    return _stats_frame(names, _grouped_stats(values.to_numpy(dtype=np.float64, na_value=np.nan), order, bounds))


def score_quantiles(examples: pd.DataFrame, scores: Sequence[str], groupings: Sequence[str]) -> pd.DataFrame:
    """:func:`quantiles_by_group` for every score under every grouping, in one long table.

    Parameters
    ----------
    examples : DataFrame
        One row per example, holding the ``scores`` and ``groupings`` columns.
    scores : sequence of str
        Numeric score columns.
    groupings : sequence of str
        Columns to group by (label, region, split, cluster…); each is sorted once.

    Returns
    -------
    DataFrame
        Columns ``score``, ``group_by``, ``group`` and the :data:`QUANTILE_COLUMNS`; per score
        and grouping, the groups in the order :func:`quantiles_by_group` gives them.
    """
    missing = [c for c in [*scores, *groupings] if c not in examples.columns]
    if missing:
        raise KeyError(f"score_quantiles: no column {', '.join(map(repr, missing))} in the examples")
    values = {s: examples[s].to_numpy(dtype=np.float64, na_value=np.nan) for s in scores}
    frames = []
    for group_by in groupings:
        codes, names = _group_codes(examples[group_by])
        order, bounds = _group_order(codes, len(names))
        for score in scores:
            frame = _stats_frame(names, _grouped_stats(values[score], order, bounds))
            frame.insert(0, "group_by", group_by)
            frame.insert(0, "score", score)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["score", "group_by", "group", *QUANTILE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def hardest(examples: pd.DataFrame, score: str, *, n: int = 50) -> pd.DataFrame:
    """The ``n`` hardest examples by ``score`` (using its direction), hardest first.

    The same rows, in the same order, as a stable sort of every row (ties in row order, missing
    values last), found by a partial sort: O(rows) rather than O(rows log rows).
    """
    if n < 0:
        raise ValueError(f"hardest: n must be 0 or more, not {n}")
    values = examples[score].to_numpy(dtype=np.float64, na_value=np.nan)
    key = -values if harder_is_higher(score) else values
    key = np.where(np.isnan(key), np.inf, key)
    n = min(n, len(key))
    if n == 0:
        return examples.iloc[:0]
    if n < len(key):
        boundary = key[np.argpartition(key, n - 1)[n - 1]]
        above = np.flatnonzero(key < boundary)
        tied = np.flatnonzero(key == boundary)
        if np.isinf(boundary):  # an infinite value ranks before a missing one
            tied = tied[np.argsort(np.isnan(values[tied]), kind="stable")]
        tied = tied[: n - len(above)]  # ties: the earliest rows, as a stable sort
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(len(key))
    # missing values: after every present value, in row order (the boundary may fall among them)
    missing = np.isnan(values[chosen])
    chosen = chosen[np.lexsort((chosen, missing, key[chosen]))]
    return examples.iloc[chosen]


def seed_stability(logits: np.ndarray, labels: np.ndarray, early_epoch: int) -> pd.DataFrame:
    """How stable each dynamics score is across probe seeds.

    Computes, per seed, every registered score that needs only the labels and the training
    dynamics (:func:`analytics.scores.compute_scores` on one seed's logits: confidence,
    variability, correctness, AUM, EL2N, forgetting events, ...; flags left out), and reports the
    mean and minimum Spearman correlation over all pairs of seeds (1 = the same ranking).

    Parameters
    ----------
    logits : ndarray of shape (seeds, epochs, n, classes)
    labels : ndarray of shape (n,)
        Gold label index of each example.
    early_epoch : int
        The epoch EL2N reads.

    Returns
    -------
    DataFrame
        One row per score column, in registry order: ``score``, ``mean_spearman``,
        ``min_spearman``, ``seeds`` (empty with fewer than two seeds); pairs whose correlation is
        undefined (a constant score) are left out.
    """
    seeds = logits.shape[0]
    if seeds < 2:
        return pd.DataFrame(columns=["score", "mean_spearman", "min_spearman", "seeds"])
    per_seed: dict[str, dict[str, np.ndarray]] = {}
    for s in range(seeds):
        one = np.asarray(logits[s:s + 1], dtype=np.float32)
        table = compute_scores(ScoreInputs(labels=labels, logits_by_epoch=one, early_epoch=early_epoch))
        for name in numeric_scores(table.columns):
            per_seed.setdefault(name, {})[f"seed {s}"] = table[name].to_numpy(dtype=float)
    rows = []
    upper = np.triu_indices(seeds, k=1)
    for name, values in per_seed.items():
        table = pd.DataFrame(values)
        pairs = score_agreement(table, list(table.columns)).to_numpy()[upper]
        pairs = pairs[np.isfinite(pairs)]
        rows.append({"score": name, "mean_spearman": float(pairs.mean()) if len(pairs) else np.nan,
                     "min_spearman": float(pairs.min()) if len(pairs) else np.nan, "seeds": seeds})
    return pd.DataFrame(rows)


def hardness_tables(examples: pd.DataFrame, *, logits: np.ndarray | None = None,
                    labels: np.ndarray | None = None, early_epoch: int = 0) -> dict[str, pd.DataFrame]:
    """The summaries of a run's scores over every row, by the name of the run file they go to.

    Parameters
    ----------
    examples : DataFrame
        The run's examples with their score columns (and ``label``, ``region``, ``split``,
        ``cluster`` when present: the :data:`GROUPINGS`).
    logits : ndarray of shape (seeds, epochs, n, classes), optional
        The training dynamics; with two seeds or more, their stability is summarised too.
    labels : ndarray of shape (n,), optional
        Gold label index of each example (needed with ``logits``).
    early_epoch : int
        The epoch EL2N reads.

    Returns
    -------
    dict of str to DataFrame
        :data:`SCORE_AGREEMENT_FILE` (:func:`score_agreement`), :data:`SCORE_QUANTILES_FILE`
        (:func:`score_quantiles`) and, with several seeds, :data:`SEED_STABILITY_FILE`
        (:func:`seed_stability`); empty when the run has no numeric scores.
    """
    scores = numeric_scores(examples.columns)
    if not scores:
        return {}
    tables = {SCORE_AGREEMENT_FILE: score_agreement(examples, scores),
              SCORE_QUANTILES_FILE: score_quantiles(examples, scores,
                                                    [g for g in GROUPINGS if g in examples.columns])}
    if logits is not None and logits.shape[0] > 1:
        if labels is None:
            raise ValueError("hardness_tables: the logits need the labels")
        tables[SEED_STABILITY_FILE] = seed_stability(logits, labels, early_epoch)
    return tables
