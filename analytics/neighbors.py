"""The one k-nearest-neighbour graph every neighbourhood score and the map reuse.

Exact brute-force search up to ``exact_max`` examples; above it, approximate search with
pynndescent (NN-descent), whose recall against exact search is measured on a sample of queries
and kept with the graph (and in the run's manifest). When that recall falls short, the graph is
refined by searching each point's neighbours' neighbours (a numba kernel, compiled code cached
in the workspace) until it does not. The graph never includes a point as its own neighbour, and
never materialises an n×n matrix (exact search works in row blocks).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from analytics.progress import ProgressStream

__all__ = ["KnnGraph", "RECALL_TARGET", "build_knn", "exact_knn", "knn_recall", "refine_knn"]

_BLOCK_BYTES = 64 << 20  # distance block held at once during exact search

#: Recall@k below which the graph is reported as inaccurate (manifest and Map page): every
#: neighbourhood score and the map inherit the graph's misses.
RECALL_TARGET = 0.95

#: Above ``exact_max`` the NN-descent graph is refined (:func:`refine_knn`) while its measured
#: recall is below this (the target plus a margin for the sampling error of 1,000 queries),
#: at most ``MAX_REFINE_PASSES`` times, stopping early when a pass gains less than
#: ``MIN_REFINE_GAIN``.
REFINE_BELOW = 0.96
MAX_REFINE_PASSES = 3
MIN_REFINE_GAIN = 0.002


@dataclass(frozen=True, eq=False)
class KnnGraph:
    """Attributes
    ----------
    indices : ndarray of shape (n, k), int32
        Neighbours of each point, nearest first; a point is never its own neighbour.
    distances : ndarray of shape (n, k), float32
        Their distances (cosine distance 1 − cos, or euclidean).
    metric : {"cosine", "euclidean"}
    method : {"exact", "nndescent"}
    recall : float
        Fraction of true k nearest neighbours found, measured on ``recall_queries`` points
        (1.0 for exact search).
    recall_queries : int
    refine_passes : int
        Neighbour-of-neighbour passes (:func:`refine_knn`) run after NN-descent (0 when exact,
        or when NN-descent alone reached ``REFINE_BELOW``).
    """

    indices: np.ndarray
    distances: np.ndarray
    metric: str
    method: str
    recall: float
    recall_queries: int
    refine_passes: int = 0

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @property
    def warning(self) -> str | None:
        """A sentence for the user when the measured recall is below ``RECALL_TARGET``, else None."""
        if self.recall >= RECALL_TARGET:
            return None
        return (f"The {self.k}-nearest-neighbour graph is approximate ({self.method}) and found only "
                f"{self.recall:.1%} of the true neighbours (measured against exact search on "
                f"{self.recall_queries:,} points; target {RECALL_TARGET:.0%}). The map, the clusters and "
                "every neighbourhood score (kNN label disagreement, density, outlier score, KNN-Shapley, "
                "near duplicates) inherit the missed neighbours.")

    def with_self(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) with each point prepended as its own nearest neighbour at
        distance 0: the layout umap-learn expects for ``precomputed_knn``."""
        n = len(self.indices)
        own = np.arange(n, dtype=self.indices.dtype)[:, None]
        return (np.hstack([own, self.indices]),
                np.hstack([np.zeros((n, 1), self.distances.dtype), self.distances]))


def _check_metric(metric: str) -> None:
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")


def exact_knn(vectors: np.ndarray, *, k: int, metric: str = "cosine",
              queries: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of ``queries`` (row indices; all rows by default).

    Works on ``vectors`` as they are, in blocks of query rows (no normalised copy of the data:
    cosine divides each block of dot products by the norms). Returns (indices, distances), each
    of shape (n_queries, k), nearest first, self excluded.
    """
    _check_metric(metric)
    data = vectors if vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
    n = len(data)
    queries = np.arange(n) if queries is None else np.asarray(queries)
    k = min(k, n - 1)
    squared = np.einsum("ij,ij->i", data, data)
    if metric == "cosine":
        norms = np.sqrt(squared)
        norms[norms == 0] = 1.0
    block = max(1, _BLOCK_BYTES // (4 * n))
    out_index = np.empty((len(queries), k), np.int32)
    out_dist = np.empty((len(queries), k), np.float32)
    for start in range(0, len(queries), block):
        rows = queries[start:start + block]
        dots = data[rows] @ data.T
        if metric == "cosine":
            dots /= norms[rows, None]
            dots /= norms[None, :]
            dist = np.subtract(1.0, dots, out=dots)
        else:
            dist = np.maximum(squared[rows, None] + squared[None, :] - 2.0 * dots, 0.0)
        dist[np.arange(len(rows)), rows] = np.inf  # never one's own neighbour
        part = np.argpartition(dist, k - 1, axis=1)[:, :k]
        part_dist = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(part_dist, axis=1, kind="stable")
        out_index[start:start + len(rows)] = np.take_along_axis(part, order, axis=1)
        chosen = np.take_along_axis(part_dist, order, axis=1)
        out_dist[start:start + len(rows)] = np.sqrt(chosen) if metric == "euclidean" else chosen
    return out_index, np.maximum(out_dist, 0.0)


def _recall_truth(vectors: np.ndarray, n: int, k: int, metric: str, n_queries: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of query rows and their exact k nearest neighbours."""
    rng = np.random.default_rng(seed)
    queries = rng.choice(n, size=min(n_queries, n), replace=False)
    truth, _ = exact_knn(vectors, k=k, metric=metric, queries=queries)
    return queries, truth


def _recall_of(indices: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the exact neighbours ``truth`` of ``queries`` that ``indices`` lists."""
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(truth, indices[queries]))
    return hits / truth.size


def knn_recall(vectors: np.ndarray, indices: np.ndarray, *, metric: str = "cosine",
               n_queries: int = 1000, seed: int = 0) -> tuple[float, int]:
    """Recall@k of a neighbour graph against exact search on a random sample of queries."""
    n, k = indices.shape
    queries, truth = _recall_truth(vectors, n, k, metric, n_queries, seed)
    return _recall_of(indices, queries, truth), len(queries)


# The refinement pass's steps for one point: plain functions that numba inlines into the kernel
# below (register_jitable), compiled under its flags and cached with it. @njit helpers held in
# the kernel's closure would put a random id into its cache key: a fresh compile in every process.

def _refine_candidate(indices, new, i, a):  # pragma: no cover - compiled
    """Candidate ``a`` of point ``i``, of its k current neighbours then their k² neighbours:
    (row, fresh), with row -1 when there is none or it needs no second look."""
    k = indices.shape[1]
    if a < k:
        return indices[i, a], False
    j = indices[i, (a - k) // k]
    if j < 0:
        return np.int32(-1), False
    # a pair of edges both in the previous graph was a candidate in the previous pass already:
    # its outcome cannot change
    if not (new[i, (a - k) // k] or new[j, (a - k) % k]):
        return np.int32(-1), False
    return indices[j, (a - k) % k], True


def _refine_distance(data, inv_norm, cosine, i, c):  # pragma: no cover - compiled
    """Distance between rows ``i`` and ``c``: 1 − cos (``inv_norm``: inverse norms) or euclidean."""
    x, y = data[i], data[c]
    acc = np.float32(0.0)
    if cosine:
        for t in range(data.shape[1]):
            acc += x[t] * y[t]
        return np.float32(1.0) - acc * inv_norm[i] * inv_norm[c]
    for t in range(data.shape[1]):
        acc += (x[t] - y[t]) * (x[t] - y[t])
    return np.sqrt(acc)


def _refine_keep(best_i, best_d, best_new, size, c, d, fresh):  # pragma: no cover - compiled
    """Insert candidate ``c`` at distance ``d`` into the ascending scratch lists of the ``size``
    nearest so far (in place, dropping the farthest when full; not at all when it is no nearer
    than that); returns the new size."""
    k = len(best_d)
    if size == k and d >= best_d[k - 1]:
        return size
    slot = size if size < k else k - 1
    while slot > 0 and best_d[slot - 1] > d:
        if slot < k:
            best_d[slot] = best_d[slot - 1]
            best_i[slot] = best_i[slot - 1]
            best_new[slot] = best_new[slot - 1]
        slot -= 1
    best_d[slot] = d
    best_i[slot] = c
    best_new[slot] = fresh
    return size + 1 if size < k else size


@functools.lru_cache(maxsize=None)
def _refine_kernel():
    """The numba-compiled refinement pass (compiled on first use, cached in the workspace)."""
    from analytics import numba_cache

    numba_cache.enable()  # before the decorator: the cache must go to the workspace's folder
    import numba
    from numba.extending import register_jitable

    for step in (_refine_candidate, _refine_distance, _refine_keep):
        register_jitable(inline="always")(step)  # a new decorator each: it pops its options

    @numba.njit(parallel=True, cache=True, fastmath=True, nogil=True)
    def refine(data, inv_norm, cosine, indices, new, out_indices, out_distances, out_new,
               n_blocks):  # pragma: no cover - compiled
        n, k = indices.shape
        block = (n + n_blocks - 1) // n_blocks
        for b in numba.prange(n_blocks):
            seen = np.full(n, -1, np.int64)  # seen[c] == i: c was already a candidate of i
            best_i = np.empty(k, np.int32)
            best_d = np.empty(k, np.float32)
            best_new = np.empty(k, np.bool_)
            for i in range(b * block, min(n, (b + 1) * block)):
                size = 0
                seen[i] = i
                for a in range(k * (k + 1)):  # the current neighbours, then theirs
                    c, fresh = _refine_candidate(indices, new, i, a)
                    if c < 0 or seen[c] == i:
                        continue
                    seen[c] = i
                    d = _refine_distance(data, inv_norm, cosine, i, c)
                    size = _refine_keep(best_i, best_d, best_new, size, c, d, fresh)
                for a in range(size):
                    out_indices[i, a] = best_i[a]
                    out_distances[i, a] = max(best_d[a], np.float32(0.0))
                    out_new[i, a] = best_new[a]
                for a in range(size, k):
                    out_indices[i, a] = -1
                    out_distances[i, a] = np.inf
                    out_new[i, a] = False

    return refine


def refine_knn(vectors: np.ndarray, indices: np.ndarray, *, metric: str = "cosine", passes: int = 1,
               new: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Improve an approximate neighbour graph by searching each point's neighbours' neighbours.

    One pass gives every point, as candidates, its current neighbours and their neighbours
    (k + k² points, duplicates and the point itself skipped), computes their distances and keeps
    the k nearest. Each pass reads the previous graph only, so the result does not depend on
    thread scheduling. A pair of edges that was already in the previous graph is not looked at
    again (as in NN-descent): its candidate was judged then, and the k-th distance of a point only
    falls. Works on ``vectors`` as they are (cosine uses their norms; no copy).

    Parameters
    ----------
    new : ndarray of shape (n, k), bool, optional
        Which entries of ``indices`` are new since the graph was last refined (the third value
        this function returns); None: all of them (a graph never refined).

    Returns
    -------
    indices : ndarray of shape (n, k), int32
    distances : ndarray of shape (n, k), float32, ascending per row
    new : ndarray of shape (n, k), bool
        Entries the last pass brought in (neighbours' neighbours that were not neighbours before).
    """
    _check_metric(metric)
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    current = np.ascontiguousarray(indices, dtype=np.int32)
    n = len(data)
    if n != len(current):
        raise ValueError(f"the graph has {len(current):,} rows but there are {n:,} vectors")
    if current.size and (current.max() >= n or (current == np.arange(n)[:, None]).any()):
        raise ValueError("the graph lists a point outside the data or as its own neighbour")
    fresh = np.ones(current.shape, bool) if new is None else np.ascontiguousarray(new, dtype=bool)
    if fresh.shape != current.shape:
        raise ValueError(f"new has shape {fresh.shape}, the graph {current.shape}")
    inv_norm = np.zeros(0, np.float32)
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", data, data))
        norms[norms == 0] = 1.0
        inv_norm = (1.0 / norms).astype(np.float32)
    import numba

    kernel = _refine_kernel()
    n_blocks = max(1, min(n, 4 * numba.get_num_threads()))
    distances = np.empty(current.shape, np.float32)
    for _ in range(max(1, passes)):
        refined, brought = np.empty_like(current), np.empty_like(fresh)
        kernel(data, inv_norm, metric == "cosine", current, fresh, refined, distances, brought, n_blocks)
        current, fresh = refined, brought
    return current, distances, fresh


def build_knn(vectors: np.ndarray, *, k: int = 15, metric: str = "cosine", exact_max: int = 50_000,
              seed: int = 0, recall_queries: int = 1000,
              progress: Callable[[float, str], None] | None = None) -> KnnGraph:
    """Build the k-nearest-neighbour graph of ``vectors`` (array of shape (n, d)).

    Exact for ``n <= exact_max``; NN-descent otherwise, its recall measured on
    ``recall_queries`` points against exact search and, while below ``REFINE_BELOW``, raised
    by neighbour-of-neighbour passes (:func:`refine_knn`).
    """
    n = len(vectors)
    if n < 2:
        raise ValueError("a neighbour graph needs at least two examples")
    k = min(k, n - 1)
    if n <= exact_max:
        indices, distances = exact_knn(vectors, k=k, metric=metric)
        return KnnGraph(indices, distances, metric, "exact", 1.0, n)
    from analytics import numba_cache

    numba_cache.enable()
    from pynndescent import NNDescent

    _check_metric(metric)
    # pynndescent normalises its own copy for cosine (float32, C-contiguous input), so the
    # vectors go in as they are: one copy of the data, not two. Searching for k+1 (the point
    # itself comes back too) keeps 1M points near 100 s here; the recall this gives is
    # measured below and reported, not assumed.
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    search_k = min(k, n - 1)
    progress = progress or (lambda fraction, message: None)
    progress(0.0, f"NN-descent on {n:,} points: building the random-projection forest")
    # pynndescent prints its iterations ("i / n") when verbose; they become progress reports
    with contextlib.redirect_stdout(ProgressStream(progress, "NN-descent: iteration", start=0.3, end=0.9)):
        index = NNDescent(data, n_neighbors=search_k + 1, metric=metric, random_state=seed,
                          low_memory=True, n_jobs=-1, verbose=True)
    raw_index, raw_dist = index.neighbor_graph
    del index  # its random-projection forest (about 1.5 GB at 1M × 384) goes before the recall check
    # Drop the point itself wherever it appears (duplicates may precede it), keep the k nearest.
    is_self = raw_index == np.arange(n)[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    indices = np.take_along_axis(raw_index, order, axis=1).astype(np.int32)
    distances = np.maximum(np.take_along_axis(raw_dist, order, axis=1).astype(np.float32), 0.0)
    del raw_index, raw_dist, is_self, order
    progress(0.9, f"Measuring recall against exact search on {min(recall_queries, n):,} points")
    queries, truth = _recall_truth(vectors, n, k, metric, recall_queries, seed)
    graph = KnnGraph(indices, distances, metric, "nndescent", _recall_of(indices, queries, truth), len(queries))
    # NN-descent can stall short of the target (recall@15 0.865 reported on one 1M × 384 set); a
    # neighbour-of-neighbour pass then lifts it. The first pass costs about a quarter of NN-descent's
    # CPU time at 100k-300k and about 70% at 1M × 384 (~85 s CPU, memory-bound); later ones a fifth of it.
    return _refine_to_target(data, graph, queries, truth, progress)


def _refine_to_target(data: np.ndarray, graph: KnnGraph, queries: np.ndarray, truth: np.ndarray,
                      progress: Callable[[float, str], None]) -> KnnGraph:
    """``graph`` refined (:func:`refine_knn`, one pass at a time) while its recall on ``queries``
    (exact neighbours ``truth``) is below ``REFINE_BELOW``: at most ``MAX_REFINE_PASSES`` passes,
    stopping when one gains less than ``MIN_REFINE_GAIN``."""
    indices, distances, recall, passes = graph.indices, graph.distances, graph.recall, graph.refine_passes
    fresh = None
    while recall < REFINE_BELOW and passes < MAX_REFINE_PASSES:
        progress(0.92 + 0.02 * passes, f"Recall {recall:.1%} is below {REFINE_BELOW:.0%}: refining the graph "
                                       f"from the neighbours' neighbours (pass {passes + 1})")
        refined, refined_dist, fresh = refine_knn(data, indices, metric=graph.metric, new=fresh)
        passes += 1
        gain = _recall_of(refined, queries, truth) - recall
        indices, distances, recall = refined, refined_dist, recall + gain
        if gain < MIN_REFINE_GAIN:
            break
    return KnnGraph(indices, distances, graph.metric, graph.method, recall, graph.recall_queries, passes)
