"""Class imbalance and checks on columns: empty or constant columns, missing rows, identifier
columns that leak the label, and spurious cues.

- **Class imbalance** (cleanlab Datalab ``class_imbalance``): a class is under-represented when
  its share of the examples is below ``threshold / K`` (Datalab's threshold 0.1, K classes).
  Datalab flags the examples of the rarest such class; we flag those of every such class.
- **Null rows** (Datalab ``null``): rows whose every content column (text and metadata or
  features) is missing.
- **Identifier columns** (Datalab ``identifier_column``, which flags integer columns whose
  values are consecutive integers): we call a column identifier-like when it holds integers or
  strings and at least 90% of its values are distinct (the ``id`` column too, unless the
  loader derived it). Its leak test: the number in it (its value, or the first number in a
  string) and, for strings, the text before that number, each as a predictor of the label.
- **Spurious cues** (Datalab ``spurious_correlations``): every metadata column, the text
  length and each image property score, alone, as a predictor of the label.

*Predicts the label* is measured by stratified K-fold cross-validation (5 folds) of a lookup
classifier: the column is cut into categories (its values, or quantile bins of a numeric
column) and each category predicts the most frequent label of its training examples (unseen
categories: the overall majority). This handles categorical and non-monotone cues that
Datalab's one-feature Gaussian naive Bayes misses, and runs in O(n) with bincounts. From the
cross-validated accuracy ``a`` and the majority baseline ``b`` (the share of the largest
class) we report Datalab's score ``min(1, (1 − a) / (1 − b))`` (lower = the column predicts the
label better; Datalab flags a property below 0.3) and a one-sided binomial p-value of ``a``
against ``b``. A spurious cue needs score < 0.3 and p < 0.001; an identifier leak needs score
< 0.8 (the column removes a fifth of the baseline's errors) and p < 0.001.

Datalab's own baseline (cleanlab 2.9.0, ``SpuriousCorrelations._get_baseline``) is
``np.bincount(labels).argmax() / n``, the *index* of the majority class divided by n, not its
share; we use the share.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from analytics.data_issues.duplicates import text_hashes
from analytics.slices import SliceConfig, slice_features

__all__ = [
    "class_imbalance",
    "column_table",
    "null_rows",
    "is_identifier_like",
    "cross_validated_accuracy",
    "predictive_power",
    "identifier_leaks",
    "spurious_cues",
]

_CUE_ENCODING = SliceConfig(n_bins=16, max_levels=200)
_IDENTIFIER_ENCODING = SliceConfig(n_bins=64, max_levels=1000)


def class_imbalance(labels: np.ndarray, classes: Sequence[str], *, threshold: float = 0.1) -> tuple[np.ndarray, dict]:
    """Per-class counts and shares, and the under-represented classes.

    Returns
    -------
    flagged : ndarray of shape (n,), bool
        Examples of a class whose share is below ``threshold / K``.
    info : dict
        ``classes`` (one row per class: count, share, share of a uniform split, ratio to the
        largest class, under_represented), ``rarest_class``, ``imbalance_ratio`` (largest /
        smallest class), ``evenness`` (entropy of the shares / log K; 1 = balanced), ``threshold``.
    """
    k = len(classes)
    counts = np.bincount(labels, minlength=k)
    share = counts / max(counts.sum(), 1)
    under = share < threshold / k
    rarest = int(np.argmin(share))  # ties go to the first class, as in Datalab
    present = share[share > 0]
    evenness = float(-(present * np.log(present)).sum() / np.log(k)) if k > 1 else 1.0
    table = [{"class": str(name), "count": int(counts[i]), "share": float(share[i]),
              "share_of_uniform": float(share[i] * k), "ratio_to_largest": float(counts[i] / counts.max()),
              "under_represented": bool(under[i])} for i, name in enumerate(classes)]
    info = {"classes": table, "rarest_class": str(classes[rarest]), "rarest_share": float(share[rarest]),
            "imbalance_ratio": float(counts.max() / counts[rarest]) if counts[rarest] else float("inf"),
            "evenness": evenness, "threshold": threshold,
            "under_represented": [str(classes[i]) for i in np.flatnonzero(under)]}
    return under[labels], info


def _distinct(values: pd.Series) -> int | None:
    """Number of distinct non-missing values; None when cells are unhashable (lists).
    Strings are counted by their 64-bit hashes: a hash table of a million long texts takes
    seconds, their hashes a fraction of one."""
    if pd.api.types.is_string_dtype(values) and values.dtype != object:
        hashes, present = text_hashes(values, normalise=False)
        return len(np.unique(hashes[present])) + int((values.notna().to_numpy() & ~present).any())
    try:
        return int(values.nunique(dropna=True))
    except TypeError:
        return None


def is_identifier_like(values: pd.Series, *, distinct: int | None = None, distinct_share: float = 0.9,
                       min_values: int = 10) -> bool:
    """Integers or strings, at least ``distinct_share`` of them distinct (``distinct``: the
    number of distinct values, when already counted)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_float_dtype(values):
        return False
    if not (pd.api.types.is_integer_dtype(values) or pd.api.types.is_string_dtype(values)
            or values.dtype == object):
        return False
    known = int(values.notna().sum())
    distinct = _distinct(values) if distinct is None else distinct
    return known >= min_values and distinct is not None and distinct >= distinct_share * known


def _sequential_integers(values: pd.Series) -> bool:
    """Datalab's identifier_column rule: integer values forming one run c, c + 1, …, c + m."""
    if not pd.api.types.is_integer_dtype(values):
        return False
    unique = np.unique(values.dropna().to_numpy())
    return len(unique) > 1 and int(unique[-1] - unique[0]) + 1 == len(unique)


def column_table(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per column: dtype, null_fraction, distinct (non-missing values), all_null,
    constant (one distinct value), identifier_like, sequential_integers (Datalab's rule)."""
    rows = []
    for name in columns:
        values = table[name]
        distinct = _distinct(values)
        identifier_like = is_identifier_like(values, distinct=distinct)
        if distinct is None:
            distinct = int(values.astype(str).nunique(dropna=True))
        null_fraction = float(values.isna().mean()) if len(values) else 1.0
        rows.append({"column": str(name), "dtype": str(values.dtype), "null_fraction": null_fraction,
                     "distinct": distinct, "all_null": null_fraction == 1.0,
                     "constant": distinct == 1, "identifier_like": identifier_like,
                     "sequential_integers": _sequential_integers(values)})
    return pd.DataFrame(rows, columns=["column", "dtype", "null_fraction", "distinct", "all_null", "constant",
                                       "identifier_like", "sequential_integers"])


def null_rows(table: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Rows whose every one of ``columns`` is missing (all False when there are no columns)."""
    if not len(columns):
        return np.zeros(len(table), bool)
    return table[list(columns)].isna().all(axis=1).to_numpy()


def _folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold of each example: within each class, a random order dealt round-robin."""
    shuffled = np.random.default_rng(seed).permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    fold = np.empty(len(labels), np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def cross_validated_accuracy(codes: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> int:
    """Number of examples the lookup classifier (each category predicts its training majority
    label; unseen categories the overall training majority) gets right under stratified
    ``folds``-fold cross-validation. ``codes`` (n,) int, −1 for missing (its own category)."""
    codes = np.where(codes < 0, codes.max() + 1, codes).astype(np.int64)
    n_codes, n_classes = int(codes.max()) + 1, int(labels.max()) + 1
    joint = codes * n_classes + labels
    total = np.bincount(joint, minlength=n_codes * n_classes).reshape(n_codes, n_classes)
    fold = _folds(labels, folds, seed)
    correct = 0
    for f in range(folds):
        test = fold == f
        train = total - np.bincount(joint[test], minlength=n_codes * n_classes).reshape(n_codes, n_classes)
        fallback = int(np.argmax(train.sum(axis=0)))
        predicted = np.where(train.sum(axis=1) > 0, np.argmax(train, axis=1), fallback)
        correct += int((predicted[codes[test]] == labels[test]).sum())
    return correct


def predictive_power(codes: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> dict:
    """How well one encoded column predicts the label: ``accuracy`` (cross-validated),
    ``baseline`` (majority share), ``lift`` (accuracy − baseline), ``score`` (Datalab's
    relative room for improvement, lower = stronger) and ``p_value`` (one-sided binomial)."""
    n = len(labels)
    correct = cross_validated_accuracy(codes, labels, folds=folds, seed=seed)
    baseline = float(np.bincount(labels).max() / n)
    accuracy = correct / n
    score = min(1.0, (1 - accuracy) / (1 - baseline)) if baseline < 1 else 1.0
    return {"accuracy": accuracy, "baseline": baseline, "lift": accuracy - baseline, "score": float(score),
            "p_value": float(_binomial_tail(correct, n, baseline))}


def _encode(frame: pd.DataFrame, config: SliceConfig) -> dict[str, np.ndarray]:
    """Category codes of each column (−1 missing); dates as numbers, so they are binned."""
    dates = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    if dates:
        frame = frame.assign(**{c: frame[c].to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
                                for c in dates})
        for c in dates:
            frame.loc[frame[c] == np.iinfo(np.int64).min, c] = np.nan
    return {feature.name: feature.codes for feature in slice_features(frame, list(frame.columns), config=config)}


def _identifier_parts(values: pd.Series) -> pd.DataFrame:
    """The parts of an identifier that could carry the label: its number, and for strings the
    text before that number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pd.api.types.is_integer_dtype(values):
        return pd.DataFrame({"number": values.astype("Float64").astype(float)})
    text = pa.array(values.astype("string"))  # Arrow's regex kernels: no Python call per value
    number = pc.cast(pc.struct_field(pc.extract_regex(text, r"(?P<number>\d+)"), [0]), pa.float64())
    prefix = pc.utf8_rtrim(pc.struct_field(pc.extract_regex(text, r"^(?P<prefix>\D*)"), [0]), characters="-_./: ")
    prefix = pc.if_else(pc.equal(prefix, ""), pa.scalar(None, prefix.type), prefix)
    return pd.DataFrame({"number": number.to_numpy(zero_copy_only=False),
                         "prefix": pd.Series(prefix.to_pylist(), dtype="string")}, index=values.index)


def identifier_leaks(table: pd.DataFrame, columns: Sequence[str], labels: np.ndarray, *, folds: int = 5,
                     seed: int = 0, max_score: float = 0.8, max_p: float = 1e-3) -> pd.DataFrame:
    """Test each identifier column for a leak of the label (see the module docstring).

    Returns
    -------
    DataFrame with one row per column: column, part ("number" or "prefix": the part that
    predicts best), accuracy, baseline, lift, score, p_value, leak (bool).
    """
    rows = []
    for name in columns:
        parts = _encode(_identifier_parts(table[name]), _IDENTIFIER_ENCODING)
        results = [{"part": part, **predictive_power(codes, labels, folds=folds, seed=seed)}
                   for part, codes in parts.items()]
        if not results:
            continue
        best = min(results, key=lambda r: (r["score"], r["p_value"]))
        rows.append({"column": str(name), **best, "leak": best["score"] < max_score and best["p_value"] < max_p})
    return pd.DataFrame(rows, columns=["column", "part", "accuracy", "baseline", "lift", "score", "p_value", "leak"])


def spurious_cues(properties: pd.DataFrame, labels: np.ndarray, *, kinds: dict[str, str] | None = None,
                  folds: int = 5, seed: int = 0, max_score: float = 0.3, max_p: float = 1e-3) -> pd.DataFrame:
    """How strongly each column of ``properties`` alone predicts the label.

    Parameters
    ----------
    properties : DataFrame of shape (n, p)
        Metadata columns, text length, image property scores…
    kinds : dict, optional
        What each property is ("metadata", "text_length", "image_property"), for the table.

    Returns
    -------
    DataFrame, strongest first: property, kind, accuracy, baseline, lift, score, p_value,
    cue (bool: score < ``max_score`` and p < ``max_p``). Properties with fewer than two
    values are left out.
    """
    kinds = kinds or {}
    rows = []
    for name, codes in _encode(properties, _CUE_ENCODING).items():
        power = predictive_power(codes, labels, folds=folds, seed=seed)
        rows.append({"property": str(name), "kind": kinds.get(name, "metadata"), **power,
                     "cue": power["score"] < max_score and power["p_value"] < max_p})
    frame = pd.DataFrame(rows, columns=["property", "kind", "accuracy", "baseline", "lift", "score", "p_value", "cue"])
    return frame.sort_values(["score", "p_value"], kind="stable").reset_index(drop=True)


def _binomial_tail(correct: int, n: int, baseline: float) -> float:
    """P(X ≥ correct) for X ~ Binomial(n, baseline); scipy.stats is imported here, not with the
    module (it costs about 0.4 s at every start of the app and the CLI)."""
    from scipy.stats import binom

    return binom.sf(correct - 1, n, baseline)
