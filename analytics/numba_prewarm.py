"""Compile umap-learn's layout into the numba cache: run by :func:`analytics.numba_cache.prewarm`
in a second process while the analysis builds its kNN graph.

A small UMAP layout (4,500 random points, 5 epochs) on an exact kNN graph, with the options the
analysis will use, compiles the same functions for the same argument types (float32 vectors,
int32 neighbour indices, float32 distances) as the analysis's own layout, and numba caches them
where the analysis looks (``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["main"]

POINTS = 4_500  # above umap-learn's 4,096: its path for larger data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metric", choices=("cosine", "euclidean"), required=True)
    parser.add_argument("--n-neighbors", type=int, required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--init", choices=("pca", "spectral"), required=True)
    args = parser.parse_args(argv)
    from analytics import numba_cache
    from analytics.neighbors import build_knn
    from analytics.projection import project_pca, project_umap

    numba_cache.enable()
    vectors = np.random.default_rng(0).standard_normal((POINTS, 16), dtype=np.float32)
    graph = build_knn(vectors, k=args.n_neighbors - 1, metric=args.metric, exact_max=POINTS)
    init = project_pca(vectors) if args.init == "pca" else None
    project_umap(vectors, knn=graph, n_neighbors=args.n_neighbors, metric=args.metric, seed=args.seed,
                 init=init, n_epochs=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
