"""Leaks between splits (FiftyOne Brain's "leaky splits") and a split without them.

An example leaks when its duplicate set (:mod:`analytics.data_issues.duplicates`) has members
in another split. Examples without a split value never leak and are never moved.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

__all__ = ["split_leaks", "leak_free_split"]


def _codes(split) -> tuple[np.ndarray, list[str]]:
    """Split codes (−1 for missing) and the split names."""
    codes, names = pd.factorize(pd.Series(split, dtype="string"), sort=True)
    return codes.astype(np.int64), [str(name) for name in names]


def _set_split_counts(sets: np.ndarray, codes: np.ndarray, n_splits: int) -> tuple[np.ndarray, np.ndarray]:
    """(members of each set in each split, shape (n_sets, n_splits); mask of examples counted)."""
    counted = (sets >= 0) & (codes >= 0)
    n_sets = int(sets.max()) + 1 if (sets >= 0).any() else 0
    counts = np.bincount(sets[counted] * n_splits + codes[counted],
                         minlength=n_sets * n_splits).reshape(n_sets, n_splits)
    return counts, counted


def split_leaks(split, duplicate_set: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Which examples have a copy in another split, and how many leaks each pair of splits has.

    Parameters
    ----------
    split : array-like of shape (n,)
        Split name of each example (missing values allowed).
    duplicate_set : ndarray of shape (n,), int
        Duplicate set id, −1 for none.

    Returns
    -------
    split_leak : ndarray of shape (n,), bool
    pairs : list of dict
        One entry per pair of splits sharing at least one set: ``{"splits": [a, b], "sets":
        sets with members in both, "examples": their members in a or b, "examples_in": {a: …,
        b: …}}``, most examples first.
    """
    sets = np.asarray(duplicate_set, dtype=np.int64)
    codes, names = _codes(split)
    counts, counted = _set_split_counts(sets, codes, len(names))
    present = counts > 0
    leaky_set = present.sum(axis=1) > 1
    leak = np.zeros(len(sets), bool)
    leak[counted] = leaky_set[sets[counted]]
    pairs = []
    for a, b in combinations(range(len(names)), 2):
        both = present[:, a] & present[:, b]
        if both.any():
            in_a, in_b = int(counts[both, a].sum()), int(counts[both, b].sum())
            pairs.append({"splits": [names[a], names[b]], "sets": int(both.sum()), "examples": in_a + in_b,
                          "examples_in": {names[a]: in_a, names[b]: in_b}})
    pairs.sort(key=lambda pair: -pair["examples"])
    return leak, pairs


def leak_free_split(split, duplicate_set: np.ndarray) -> tuple[np.ndarray, int]:
    """A split in which every duplicate set sits in one split.

    Each set that spans several splits moves whole to the split that holds most of its
    members (the fewest moves); a tie goes to the split that is largest overall (usually the
    training split, so that the held-out splits only lose examples). Examples without a split
    stay as they are.

    Returns
    -------
    new_split : ndarray of shape (n,), object
        The split name of each example (None where it had none).
    moved : int
        Number of examples whose split changed.
    """
    sets = np.asarray(duplicate_set, dtype=np.int64)
    codes, names = _codes(split)
    new_split = np.array([*names, None], dtype=object)  # code −1 (no split) picks the None at the end
    if not names:
        return new_split[codes], 0
    counts, counted = _set_split_counts(sets, codes, len(names))
    overall = np.bincount(codes[codes >= 0], minlength=len(names))
    # most members first, then the larger split overall: one key, argmax takes the first maximum
    key = counts * (int(overall.max()) + 1) + overall[None, :]
    target = np.argmax(key, axis=1)
    new_codes = codes.copy()
    new_codes[counted] = target[sets[counted]]
    moved = int((new_codes != codes).sum())
    return new_split[new_codes], moved
