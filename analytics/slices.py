"""Slice discovery: where does the model do worse than overall, by how much, and how sure are we.

A *slice* is a set of examples sharing one value of a feature (a cluster, a categorical
column's value, a bin of a numeric column) or a pair of such values. For every slice with at
least ``min_support`` examples we count errors and compute the error rate with a 95% Wilson
score interval. Slices are ranked by the lower end of that interval minus the overall error
rate (``gap_low``): a slice ranks high only when it is clearly worse, so a tiny slice with two
errors out of three does not top the list, and a big slice that is only slightly worse ranks
below a sizable one that is much worse. A pair is kept only when it is clearly worse than both
of its single-feature parents — the lower end of its interval lies above each parent's error
rate — otherwise the parent already says it.

Harmony (our definition; after Uzunoglu et al. 2025, "The Flaw of Averages"): with accuracies
a_1..a_m of the m clusters (noise left out), p_c = a_c / Σ a_c and

    harmony = −Σ p_c log p_c / log m,

the normalised Shannon entropy of how accuracy is spread over clusters. It is 1 when every
cluster has the same accuracy and falls as accuracy concentrates in a few clusters. Every
cluster counts the same, whatever its size (that is the point: averages weight by size). It is
undefined (NaN) when all accuracies are 0, and 1 for a single cluster. We report it next to the
worst cluster's accuracy and the spread of accuracies, which are easier to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["SliceConfig", "SliceFeature", "wilson_interval", "slice_features", "discover_slices", "harmony",
           "uniformity", "slice_mask"]


@dataclass(frozen=True)
class SliceConfig:
    """``min_support=None``: 0.5% of the examples, at least 10."""

    min_support: int | None = None
    n_bins: int = 4
    max_levels: int = 30
    pairs: bool = True
    max_pair_features: int = 12
    confidence: float = 0.95
    top: int = 500

    def support(self, n: int) -> int:
        return self.min_support if self.min_support is not None else max(10, int(np.ceil(0.005 * n)))


@dataclass(frozen=True, eq=False)
class SliceFeature:
    name: str
    codes: np.ndarray  # (n,) int64, -1 for missing
    levels: list[str]  # readable value of each code


def wilson_interval(successes, trials, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (elementwise); (nan, nan) where trials is 0."""
    from scipy.stats import norm

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    z = norm.ppf(0.5 + confidence / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denominator = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def _format_number(value: float) -> str:
    return f"{value:.3g}"


def slice_features(
    frame: pd.DataFrame,
    columns: Sequence[str],
    *,
    config: SliceConfig | None = None,
    display: Mapping[str, Mapping[object, str]] | None = None,
    categorical: Sequence[str] = (),
) -> list[SliceFeature]:
    """Encode ``columns`` of ``frame`` as slice features: categorical values as they are
    (columns with more than ``max_levels`` values are left out unless numeric), numeric columns
    with many values in quantile bins. ``display`` maps a column's raw values to readable ones
    (e.g. cluster id → "3 (compiler · gcc · build)"). Columns in ``categorical`` (cluster ids)
    are never binned and may have any number of values."""
    config = config or SliceConfig()
    display = display or {}
    features: list[SliceFeature] = []
    for column in columns:
        values = frame[column]
        if column in categorical:
            codes, uniques = pd.factorize(values, sort=True)
            mapping = display.get(column, {})
            features.append(SliceFeature(column, codes.astype(np.int64), [f"= {mapping.get(u, u)}" for u in uniques]))
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) \
                and values.nunique(dropna=True) > config.max_levels:
            finite = values.astype(float)
            edges = np.unique(np.nanquantile(finite, np.linspace(0, 1, config.n_bins + 1)))
            if len(edges) < 3:
                continue
            codes = np.searchsorted(edges[1:-1], finite.to_numpy(), side="right").astype(np.int64)
            codes[~np.isfinite(finite.to_numpy())] = -1
            levels = []
            for i in range(len(edges) - 1):
                closing = "]" if i == len(edges) - 2 else ")"
                levels.append(f"in [{_format_number(edges[i])}, {_format_number(edges[i + 1])}{closing}")
            features.append(SliceFeature(column, codes, levels))
            continue
        if values.nunique(dropna=True) > config.max_levels or values.nunique(dropna=True) < 2:
            continue
        codes, uniques = pd.factorize(values, sort=True)
        mapping = display.get(column, {})
        levels = [f"= {mapping.get(u, u)}" for u in uniques]
        features.append(SliceFeature(column, codes.astype(np.int64), levels))
    return features


def _rates(codes: np.ndarray, errors: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    valid = codes >= 0
    support = np.bincount(codes[valid], minlength=n_levels)
    wrong = np.bincount(codes[valid], weights=errors[valid].astype(np.float64), minlength=n_levels)
    return support, wrong


def discover_slices(
    features: Sequence[SliceFeature],
    errors: np.ndarray,
    *,
    config: SliceConfig | None = None,
    no_pairs_between: Sequence[frozenset[str]] = (),
) -> pd.DataFrame:
    """Rank slices by how much worse the error rate is than overall (see the module docstring).

    Returns a DataFrame, best first, with ``slice`` (readable), ``features``, ``support``,
    ``errors``, ``error_rate``, ``ci_low``, ``ci_high``, ``overall_error_rate``, ``lift``
    (error rate ÷ overall), ``gap_low`` (ci_low − overall, the ranking key) and ``codes``
    (the values, to rebuild the member mask with :func:`slice_mask`). Only slices whose error
    rate is above the overall one are listed. ``no_pairs_between`` lists feature pairs not to
    combine (e.g. nested cluster levels).
    """
    config = config or SliceConfig()
    errors = np.asarray(errors, dtype=bool)
    n = len(errors)
    if n == 0:
        raise ValueError("no examples to slice")
    overall = float(errors.mean())
    min_support = config.support(n)
    skip = {frozenset(p) for p in no_pairs_between}
    rows, single_rate = _single_slices(features, errors, min_support)
    if config.pairs:
        rows = rows + _pair_slices(features, errors, rows, single_rate, skip, min_support, config)
    columns = ["slice", "features", "codes", "support", "errors", "error_rate", "ci_low", "ci_high",
               "overall_error_rate", "lift", "gap_low"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    table["error_rate"] = table["errors"] / table["support"]
    table["ci_low"], table["ci_high"] = wilson_interval(table["errors"], table["support"], config.confidence)
    table["overall_error_rate"] = overall
    table["lift"] = table["error_rate"] / overall if overall > 0 else np.inf
    table["gap_low"] = table["ci_low"] - overall
    table = table[table["error_rate"] > overall]
    table = table.sort_values(["gap_low", "support"], ascending=[False, False], kind="stable").head(config.top)
    return table[columns].reset_index(drop=True)


def _single_slices(features: Sequence[SliceFeature], errors: np.ndarray,
                   min_support: int) -> tuple[list[dict], dict[tuple[str, int], float]]:
    """The one-feature slices with at least ``min_support`` examples (rows of the
    :func:`discover_slices` table, before its rates), and every level's error rate keyed by
    (feature, level)."""
    rows: list[dict] = []
    single_rate: dict[tuple[str, int], float] = {}
    for feature in features:
        support, wrong = _rates(feature.codes, errors, len(feature.levels))
        for level, (count, bad) in enumerate(zip(support, wrong)):
            if count == 0:
                continue
            single_rate[(feature.name, level)] = bad / count
            if count >= min_support:
                rows.append({"slice": f"{feature.name} {feature.levels[level]}", "features": [feature.name],
                             "codes": [level], "support": int(count), "errors": int(bad)})
    return rows, single_rate


def _pair_slices(features: Sequence[SliceFeature], errors: np.ndarray, single_rows: list[dict],
                 single_rate: dict[tuple[str, int], float], skip: set[frozenset[str]], min_support: int,
                 config: SliceConfig) -> list[dict]:
    """The two-feature slices, over the ``config.max_pair_features`` features with the worst
    single slices (``single_rows``) and not in ``skip``, kept only when clearly worse than both
    parents."""
    worst = {}
    for row in single_rows:
        name = row["features"][0]
        worst[name] = max(worst.get(name, 0.0), row["errors"] / row["support"])
    ranked = sorted((f for f in features if f.name in worst), key=lambda f: -worst[f.name])
    chosen = {f.name for f in ranked[:config.max_pair_features]}
    rows: list[dict] = []
    for a, b in combinations([f for f in features if f.name in chosen], 2):  # in the given order
        if frozenset((a.name, b.name)) in skip:
            continue
        width = len(b.levels)
        valid = (a.codes >= 0) & (b.codes >= 0)
        combined = np.where(valid, a.codes * width + b.codes, -1)
        support, wrong = _rates(combined, errors, len(a.levels) * width)
        for code in np.flatnonzero(support >= min_support):
            la, lb = divmod(int(code), width)
            # listed only when clearly worse than both parents: its interval lies above them
            low = wilson_interval(wrong[code], support[code], config.confidence)[0]
            if low <= single_rate.get((a.name, la), 1.0) or low <= single_rate.get((b.name, lb), 1.0):
                continue
            rows.append({"slice": f"{a.name} {a.levels[la]} & {b.name} {b.levels[lb]}",
                         "features": [a.name, b.name], "codes": [la, lb],
                         "support": int(support[code]), "errors": int(wrong[code])})
    return rows


def slice_mask(features: Sequence[SliceFeature], names: Sequence[str], codes: Sequence[int]) -> np.ndarray:
    """Which examples belong to the slice ``names``/``codes`` (as listed by :func:`discover_slices`)."""
    by_name = {f.name: f for f in features}
    mask = None
    for name, code in zip(names, codes):
        if name not in by_name:
            raise KeyError(f"slice feature {name!r} not among {sorted(by_name)}")
        part = by_name[name].codes == int(code)
        mask = part if mask is None else mask & part
    return mask


def harmony(accuracies: Sequence[float]) -> float:
    """Normalised entropy of accuracy shares over clusters (see the module docstring)."""
    values = np.asarray([a for a in accuracies if np.isfinite(a)], dtype=np.float64)
    if len(values) == 0 or values.sum() <= 0:
        return float("nan")
    if len(values) == 1:
        return 1.0
    shares = values / values.sum()
    nonzero = shares[shares > 0]
    return float(-(nonzero * np.log(nonzero)).sum() / np.log(len(values)))


def uniformity(accuracies: Sequence[float], sizes: Sequence[int] | None = None) -> dict:
    """Harmony with the plainer figures beside it: worst and best cluster accuracy, their gap,
    the (unweighted) standard deviation of cluster accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return {"harmony": float("nan"), "clusters": 0}
    return {"harmony": round(harmony(finite), 6), "clusters": int(len(finite)),
            "worst_accuracy": round(float(finite.min()), 6), "best_accuracy": round(float(finite.max()), 6),
            "gap": round(float(finite.max() - finite.min()), 6),
            "std_accuracy": round(float(finite.std()), 6),
            "mean_accuracy_unweighted": round(float(finite.mean()), 6)}
