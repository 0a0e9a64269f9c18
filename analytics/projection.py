"""2-D maps of the embeddings: UMAP (the default) and PCA (instant, shown while UMAP runs).

UMAP reuses the shared neighbour graph (:mod:`analytics.neighbors`) instead of searching
again, and fits every point (fitting a sample and ``transform``-ing the rest was far slower at
1M here: transform searches and optimises each new point again). Above ``fit_max`` examples it
falls back to that sample-and-transform path. umap-learn's ``random_state`` makes it single-threaded (about 1.9×
slower here), so by default no seed is set and the cached result is what keeps a team's map
stable; pass ``seed`` for a bit-reproducible map.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from analytics.neighbors import KnnGraph
from analytics.progress import ProgressStream

__all__ = ["project_pca", "project_umap", "scaled_start", "PROJECTIONS", "UMAP_INITS", "PCA_START_FROM"]

PROJECTIONS = ("umap", "pca")
UMAP_INITS = ("auto", "spectral", "pca")
#: "auto" starts UMAP from the PCA map from this many points on (spectral below).
PCA_START_FROM = 200_000


def project_pca(vectors: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """First two principal components. Returns ndarray of shape (n, 2), float32."""
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] < 2:
        return np.hstack([vectors, np.zeros_like(vectors)])[:, :2]
    return PCA(n_components=2, svd_solver="randomized" if len(vectors) > 5000 else "full",
               random_state=seed).fit_transform(vectors).astype(np.float32)


def scaled_start(coords: np.ndarray, seed: int | None = None) -> np.ndarray:
    """``coords`` scaled so the largest absolute coordinate is 10, plus N(0, 1e-4) jitter
    (umap-learn's ``noisy_scale_coords``). Returns float32 (n, 2)."""
    coords = np.asarray(coords, dtype=np.float32)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"a UMAP start must have shape (n, 2), not {coords.shape}")
    largest = float(np.abs(coords).max()) if coords.size else 0.0
    scaled = coords * (10.0 / largest) if largest > 0 else coords.copy()
    rng = np.random.default_rng(0 if seed is None else seed)
    return scaled + rng.normal(scale=1e-4, size=coords.shape).astype(np.float32)


def project_umap(
    vectors: np.ndarray,
    *,
    knn: KnnGraph | None = None,
    n_neighbors: int = 15,
    metric: str = "cosine",
    min_dist: float = 0.1,
    fit_max: int = 2_000_000,
    fit_sample: int = 50_000,
    n_epochs: int | None = None,
    seed: int | None = None,
    init: np.ndarray | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """UMAP to 2-D (McInnes et al. 2018). Returns ndarray of shape (n, 2), float32.

    With ``knn`` of at least ``n_neighbors - 1`` neighbours and ``n <= fit_max``, UMAP uses that
    graph directly. Above ``fit_max``, it is fitted on ``fit_sample`` random points and the rest
    are transformed into that map.

    ``init``: starting 2-D coordinates (n, 2), e.g. the PCA map, instead of UMAP's spectral
    initialisation. A scaled PCA start keeps the global structure as well as the spectral one
    (Kobak & Linderman 2021, "Initialization is critical for preserving global data structure
    in both t-SNE and UMAP") and skips the eigen-solve of the n × n graph Laplacian, which costs
    minutes at 1M points. They are scaled and jittered as umap-learn treats its own spectral
    and PCA starts (:func:`scaled_start`); umap-learn then rescales every start to [0, 10].
    """
    from analytics import numba_cache

    numba_cache.enable()
    import umap

    progress = progress or (lambda fraction, message: None)
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    n_neighbors = max(2, min(n_neighbors, n - 1))
    if n_epochs is None:
        # umap-learn's own default is 200 epochs above 10k points; the layout settles sooner
        # on large data, and each epoch costs O(n·k).
        n_epochs = 200 if n <= 50_000 else 100 if n <= 300_000 else 50
    options = dict(n_components=2, n_neighbors=n_neighbors, metric=metric, min_dist=min_dist,
                   n_epochs=n_epochs, random_state=seed, low_memory=True)
    if seed is None:
        options["n_jobs"] = -1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if n <= fit_max:
            if knn is not None and knn.k >= n_neighbors - 1 and knn.metric == metric:
                options["precomputed_knn"] = knn.with_self()
            if init is not None:
                options["init"] = scaled_start(init, seed)
            progress(0.0, f"UMAP on {n:,} points")
            options["tqdm_kwds"] = {"disable": False, "file": ProgressStream(progress, "UMAP: epoch", start=0.1),
                                    "bar_format": "{n}/{total}", "mininterval": 1.0}
            return umap.UMAP(**options).fit_transform(vectors).astype(np.float32)
        rng = np.random.default_rng(0 if seed is None else seed)
        sample = np.sort(rng.choice(n, size=fit_sample, replace=False))
        progress(0.0, f"UMAP: fitting on a sample of {fit_sample:,} of {n:,} points")
        reducer = umap.UMAP(**options).fit(vectors[sample])
        coords = np.empty((n, 2), np.float32)
        coords[sample] = reducer.embedding_
        rest = np.setdiff1d(np.arange(n), sample)
        step = 100_000
        for start in range(0, len(rest), step):
            progress(start / len(rest), f"UMAP: placing the other points, {start:,} of {len(rest):,}")
            chunk = rest[start:start + step]
            coords[chunk] = reducer.transform(vectors[chunk])
        return coords
