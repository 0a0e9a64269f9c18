"""Exact and near copies, grouped into duplicate sets.

Three kinds of evidence link two examples; a duplicate set is a connected component of the
links (as SCIENCE.md defines it), so every member of a set shares one id.

1. **Exact copies**: equal content hash (64-bit): the text with whitespace runs collapsed and
   trimmed, the image file's bytes, or the row of feature columns for a table. Empty content
   (a missing text, an unreadable image, an all-missing row) is never a copy.
2. **Near copies on the shared kNN graph**, calibrated as cleanlab Datalab's ``near_duplicate``
   issue: with ``m`` the median distance of every example to its nearest neighbour, the edge
   i → j of the graph is a near copy when ``d(i, j) < threshold · m`` (Datalab's default
   threshold 0.13). Datalab flags every example with such an edge; we do the same, and join
   the edges into sets.
3. **Content checks that reach further than the embedding**, on graph edges the radius above
   misses:

   - text: graph edges with ``d < text_reach · m`` (0.5) whose character 5-gram shingle sets
     (lower-cased, whitespace-normalised) have a Jaccard similarity of at least
     ``text_jaccard`` (0.8, the usual near-duplicate cut of MinHash deduplication). The
     Jaccard is computed exactly on the candidate pairs: with the pairs given by the graph,
     that is cheaper than MinHash signatures (datasketch: about 0.5–0.8 ms per text here, 10×
     our shingling) and has no estimation error.
   - images: graph edges whose 64-bit perceptual hashes (``imagehash.phash``, as CleanVision's
     near duplicates) differ in at most ``phash_bits`` bits, and any two images with equal
     perceptual hashes (CleanVision's own rule), neighbours or not.

Memory is O(n·k): the graph's (n, k) arrays, a boolean mask of the same shape and the edges
kept; nothing is n×n.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "DuplicateResult",
    "text_hashes",
    "row_hashes",
    "equal_hash_edges",
    "radius_edges",
    "text_jaccard_edges",
    "phash_edges",
    "duplicate_sets",
    "find_duplicates",
    "DATALAB_THRESHOLD",
]

#: Datalab's near_duplicate threshold, relative to the median nearest-neighbour distance.
DATALAB_THRESHOLD = 0.13
_EPSILON = 1e-6  # Datalab's floor for the median (cleanlab.internal.constants.EPSILON)


@dataclass(frozen=True, eq=False)
class DuplicateResult:
    """Per-example duplicate columns and what the check found.

    Attributes
    ----------
    near_duplicate : ndarray of shape (n,), bool
        The example belongs to a set of exact or near copies.
    duplicate_set : ndarray of shape (n,), int64
        Set id (0 is the largest set), −1 for none.
    duplicate_kind : ndarray of shape (n,), object
        "exact" (it shares its content hash with another example), "near" (in a set without
        an exact copy of its own) or "".
    duplicate_label_conflict : ndarray of shape (n,), bool
        Its set holds more than one label.
    info : dict
        Thresholds and counts for ``issues.json``.
    """

    near_duplicate: np.ndarray
    duplicate_set: np.ndarray
    duplicate_kind: np.ndarray
    duplicate_label_conflict: np.ndarray
    info: dict = field(default_factory=dict)


# Whitespace other than one space between words: any whitespace character str.split() knows
# but the space itself, two spaces, or a space at either end (an RE2 pattern for Arrow).
_UNTIDY_WHITESPACE = "[{}]|  |^ | $".format("".join(
    f"\\x{{{code:x}}}" for code in range(0x3001) if chr(code).isspace() and code != 0x20))


def text_hashes(texts: pd.Series, *, normalise: bool = True, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of texts, with whitespace runs collapsed to one space and trimmed
    (``normalise``; else as they are).

    Python's string hash (SipHash): fast, and stable within one process, which is all the
    grouping needs; it is never stored. Only texts with untidy whitespace are rebuilt (found
    by one Arrow regex kernel), and the column becomes Python strings a chunk at a time, so
    memory stays bounded.

    Returns
    -------
    hashes : ndarray of shape (n,), int64
    valid : ndarray of shape (n,), bool
        False for missing or empty texts (never counted as copies).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pa.array(texts.astype("string"))
    hashes = np.zeros(len(column), np.int64)
    valid = np.array(pc.fill_null(pc.greater(pc.utf8_length(column), 0), False), dtype=bool)
    for start in range(0, len(column), chunk):
        part = column.slice(start, chunk)
        values = part.to_numpy(zero_copy_only=False)
        if normalise:
            untidy = pc.fill_null(pc.match_substring_regex(part, _UNTIDY_WHITESPACE), False)
            for i in np.flatnonzero(untidy.to_numpy(zero_copy_only=False)):
                values[i] = " ".join(values[i].split())
        hashes[start:start + len(values)] = np.fromiter(map(hash, values), dtype=np.int64, count=len(values))
    if normalise:
        valid &= hashes != hash("")  # whitespace only
    return hashes, valid


def row_hashes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of whole rows (all columns of ``frame``), and False for all-missing rows."""
    if frame.shape[1] == 0:
        return np.zeros(len(frame), np.uint64), np.zeros(len(frame), bool)
    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    valid = frame.notna().any(axis=1).to_numpy()
    return hashes, valid


def equal_hash_edges(hashes: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Link examples with equal hashes: each to the previous one of its group (a chain).

    Returns
    -------
    rows, cols : ndarray of int64
        The edges.
    shared : ndarray of shape (n,), bool
        The example shares its hash with at least one other valid example.
    """
    candidates = np.flatnonzero(valid)
    order = candidates[np.argsort(hashes[candidates], kind="stable")]
    same = hashes[order[1:]] == hashes[order[:-1]]
    rows, cols = order[1:][same], order[:-1][same]
    shared = np.zeros(len(hashes), bool)
    shared[rows] = True
    shared[cols] = True
    return rows.astype(np.int64), cols.astype(np.int64), shared


def radius_edges(knn_indices: np.ndarray, knn_distances: np.ndarray, *,
                 threshold: float = DATALAB_THRESHOLD) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Graph edges shorter than ``threshold`` × the median nearest-neighbour distance (Datalab).

    Returns
    -------
    rows, cols : ndarray of int64
    median : float
        Median distance of the examples to their nearest neighbour (floored at 1e-6, as
        Datalab floors it so that a dataset of copies still has a positive radius).
    radius : float
    """
    median = max(float(np.median(knn_distances[:, 0])), _EPSILON)
    radius = threshold * median
    rows, slots = np.nonzero(knn_distances < radius)
    return rows.astype(np.int64), knn_indices[rows, slots].astype(np.int64), median, radius


_SHINGLE_MULTIPLIER = np.uint64(1_000_003)


def _shingles(text, size: int = 5) -> np.ndarray:
    """Sorted unique 64-bit hashes of the character ``size``-grams of the lower-cased,
    whitespace-normalised text (a polynomial hash of the code points; wraps modulo 2^64)."""
    if not isinstance(text, str):
        return np.zeros(0, np.uint64)
    text = " ".join(text.lower().split())
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    count = len(codes) - size + 1
    if count < 1:
        count, size = min(len(codes), 1), len(codes)  # a short text is one shingle
    grams = codes[:count].copy()
    for offset in range(1, size):
        grams = grams * _SHINGLE_MULTIPLIER + codes[offset:offset + count]
    grams.sort()
    return grams[np.concatenate(([True], grams[1:] != grams[:-1]))] if len(grams) else grams


def _jaccard(first: np.ndarray, second: np.ndarray) -> float:
    if not len(first) or not len(second):
        return 0.0
    where = np.searchsorted(second, first)
    where[where == len(second)] = 0
    common = int((second[where] == first).sum())
    return common / (len(first) + len(second) - common)


def text_jaccard_edges(texts: pd.Series, knn_indices: np.ndarray, knn_distances: np.ndarray, *,
                       reach: float, jaccard: float = 0.8,
                       max_pairs: int = 50_000) -> tuple[np.ndarray, np.ndarray, dict]:
    """Graph edges with ``d < reach`` whose texts share at least ``jaccard`` of their character
    5-gram shingles (Jaccard similarity of the shingle sets, exact up to 64-bit hash
    collisions).

    At most ``max_pairs`` distinct pairs are compared, nearest first; ``info`` says how many
    candidates there were and how many were compared.
    """
    n = len(knn_indices)
    rows, slots = np.nonzero(knn_distances < reach)
    cols = knn_indices[rows, slots].astype(np.int64)
    keys, where = np.unique(np.minimum(rows, cols) * n + np.maximum(rows, cols), return_index=True)
    keys = keys[np.argsort(knn_distances[rows, slots][where], kind="stable")]
    info = {"candidate_pairs": int(len(keys)), "compared_pairs": int(min(len(keys), max_pairs))}
    keys = keys[:max_pairs]
    first, second = keys // n, keys % n
    members = np.unique(np.concatenate([first, second]))
    shingles = dict(zip(members.tolist(), map(_shingles, texts.iloc[members].to_numpy(dtype=object))))
    keep = np.fromiter((_jaccard(shingles[int(a)], shingles[int(b)]) >= jaccard for a, b in zip(first, second)),
                       dtype=bool, count=len(first))
    return first[keep], second[keep], info


def phash_edges(phashes: np.ndarray, valid: np.ndarray, knn_indices: np.ndarray, *,
                max_bits: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Graph edges whose 64-bit perceptual hashes differ in at most ``max_bits`` bits (both
    images readable)."""
    differing = np.bitwise_count(phashes[:, None] ^ phashes[knn_indices])
    close = (differing <= max_bits) & valid[:, None] & valid[knn_indices]
    rows, slots = np.nonzero(close)
    return rows.astype(np.int64), knn_indices[rows, slots].astype(np.int64)


def duplicate_sets(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected components of the edges, as set ids: −1 for an example without copies, else
    0, 1, … by decreasing set size (ties: the set whose first member comes first)."""
    if len(rows) == 0:
        return np.full(n, -1, np.int64)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    first = np.full(len(sizes), n, np.int64)
    np.minimum.at(first, component, np.arange(n))
    grouped = np.flatnonzero(sizes > 1)
    ranked = grouped[np.lexsort((first[grouped], -sizes[grouped]))]
    set_of_component = np.full(len(sizes), -1, np.int64)
    set_of_component[ranked] = np.arange(len(ranked))
    return set_of_component[component]


def _label_conflicts(sets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True for members of sets holding more than one label."""
    member = sets >= 0
    if not member.any():
        return np.zeros(len(sets), bool)
    n_sets = int(sets.max()) + 1
    low = np.full(n_sets, np.iinfo(np.int64).max)
    high = np.full(n_sets, np.iinfo(np.int64).min)
    np.minimum.at(low, sets[member], labels[member])
    np.maximum.at(high, sets[member], labels[member])
    conflict = np.zeros(len(sets), bool)
    conflict[member] = (low != high)[sets[member]]
    return conflict


def find_duplicates(
    labels: np.ndarray,
    knn_indices: np.ndarray,
    knn_distances: np.ndarray,
    *,
    content_hashes: tuple[np.ndarray, np.ndarray] | None = None,
    texts: pd.Series | None = None,
    phashes: tuple[np.ndarray, np.ndarray] | None = None,
    threshold: float = DATALAB_THRESHOLD,
    text_reach: float = 0.5,
    text_jaccard: float = 0.8,
    text_max_pairs: int = 50_000,
    phash_bits: int = 2,
) -> DuplicateResult:
    """Find exact and near copies and group them into sets.

    Parameters
    ----------
    labels : ndarray of shape (n,), int
    knn_indices, knn_distances : ndarray of shape (n, k)
        The shared neighbour graph, nearest first, self excluded.
    content_hashes : (hashes, valid), optional
        Content hash of every example (:func:`text_hashes`, :func:`row_hashes`, or the image
        files' bytes) and whether it has content. None: no exact-copy check.
    texts : Series, optional
        The texts, for the shingle check of candidate edges out to ``text_reach`` × the
        median nearest-neighbour distance.
    phashes : (hashes, valid), optional
        64-bit perceptual hashes of the images (uint64) and whether the image was read.
    threshold : float, default 0.13
        Near-copy radius relative to the median nearest-neighbour distance (Datalab's).
    text_jaccard : float, default 0.8
    phash_bits : int, default 2
        Largest Hamming distance between perceptual hashes of graph neighbours that counts as
        a near copy (of 64 bits).
    """
    n = len(labels)
    edges: list[tuple[np.ndarray, np.ndarray]] = []
    info: dict = {"threshold": threshold}
    exact = np.zeros(n, bool)
    if content_hashes is not None:
        rows, cols, exact = equal_hash_edges(*content_hashes)
        edges.append((rows, cols))
    rows, cols, median, radius = radius_edges(knn_indices, knn_distances, threshold=threshold)
    edges.append((rows, cols))
    info.update(median_nn_distance=median, radius=radius, knn_edges=int(len(rows)))
    if texts is not None:
        rows, cols, checked = text_jaccard_edges(texts, knn_indices, knn_distances, reach=text_reach * median,
                                                 jaccard=text_jaccard, max_pairs=text_max_pairs)
        edges.append((rows, cols))
        info["text_shingles"] = {"reach": text_reach, "jaccard": text_jaccard, **checked,
                                 "near_pairs": int(len(rows))}
    if phashes is not None:
        hashes, valid = phashes
        rows, cols = phash_edges(hashes, valid, knn_indices, max_bits=phash_bits)
        same_rows, same_cols, _ = equal_hash_edges(hashes, valid)
        edges.append((np.concatenate([rows, same_rows]), np.concatenate([cols, same_cols])))
        info["perceptual_hash"] = {"max_bits": phash_bits, "knn_edges": int(len(rows)),
                                   "equal_hash_edges": int(len(same_rows))}
    sets = duplicate_sets(n, np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges]))
    member = sets >= 0
    kind = np.full(n, "", dtype=object)
    kind[member] = "near"
    kind[member & exact] = "exact"
    conflict = _label_conflicts(sets, np.asarray(labels))
    n_sets = int(sets.max()) + 1 if member.any() else 0
    info.update(sets=n_sets, examples=int(member.sum()), exact_examples=int((member & exact).sum()),
                near_examples=int((kind == "near").sum()),
                largest_set=int(np.bincount(sets[member]).max()) if n_sets else 0,
                conflicting_sets=int(len(np.unique(sets[conflict]))),
                redundant_examples=int(member.sum()) - n_sets)
    return DuplicateResult(member, sets, kind, conflict, info)
