"""The one k-nearest-neighbour graph every neighbourhood score and the map reuse.

Exact brute-force search up to ``exact_max`` examples; above it, approximate search with
pynndescent (NN-descent), whose recall against exact search is measured on a sample of queries
and kept with the graph (and in the run's manifest). The graph never includes a point as its
own neighbour, and never materialises an n×n matrix (exact search works in row blocks).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from analytics.progress import ProgressStream

__all__ = ["KnnGraph", "RECALL_TARGET", "build_knn", "exact_knn", "knn_recall"]

_BLOCK_BYTES = 64 << 20  # distance block held at once during exact search

#: Recall@k below which the graph is reported as inaccurate (manifest and Map page): every
#: neighbourhood score and the map inherit the graph's misses.
RECALL_TARGET = 0.95


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
    """

    indices: np.ndarray
    distances: np.ndarray
    metric: str
    method: str
    recall: float
    recall_queries: int

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


def knn_recall(vectors: np.ndarray, indices: np.ndarray, *, metric: str = "cosine",
               n_queries: int = 1000, seed: int = 0) -> tuple[float, int]:
    """Recall@k of a neighbour graph against exact search on a random sample of queries."""
    n, k = indices.shape
    rng = np.random.default_rng(seed)
    queries = rng.choice(n, size=min(n_queries, n), replace=False)
    truth, _ = exact_knn(vectors, k=k, metric=metric, queries=queries)
    hits = sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(truth, indices[queries]))
    return hits / truth.size, len(queries)


def build_knn(vectors: np.ndarray, *, k: int = 15, metric: str = "cosine", exact_max: int = 50_000,
              seed: int = 0, recall_queries: int = 1000,
              progress: Callable[[float, str], None] | None = None) -> KnnGraph:
    """Build the k-nearest-neighbour graph of ``vectors`` (array of shape (n, d)).

    Exact for ``n <= exact_max``; NN-descent otherwise (its recall measured on
    ``recall_queries`` points against exact search).
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
    distances = np.take_along_axis(raw_dist, order, axis=1).astype(np.float32)
    progress(0.9, f"Measuring recall against exact search on {min(recall_queries, n):,} points")
    recall, queries = knn_recall(vectors, indices, metric=metric, n_queries=recall_queries, seed=seed)
    return KnnGraph(indices, np.maximum(distances, 0.0), metric, "nndescent", recall, queries)
