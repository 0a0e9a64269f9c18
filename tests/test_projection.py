"""Projections: PCA shape; UMAP keeps neighbourhoods (trustworthiness) with the shared graph."""

from __future__ import annotations

import numpy as np
from sklearn.manifold import trustworthiness

from analytics.neighbors import build_knn
from analytics.projection import project_pca, project_umap
from tests.test_neighbors import blobs


def test_pca_is_two_dimensional_and_float32():
    data, _ = blobs(n=200)
    coords = project_pca(data)
    assert coords.shape == (200, 2) and coords.dtype == np.float32


def test_umap_with_the_shared_graph_keeps_neighbourhoods():
    data, labels = blobs(n=800, d=20)
    graph = build_knn(data, k=15)
    coords = project_umap(data, knn=graph, n_neighbors=16, seed=0)
    assert coords.shape == (800, 2) and np.isfinite(coords).all()
    assert trustworthiness(data, coords, n_neighbors=10) > 0.9
    # blobs stay apart: each point's nearest map neighbour shares its blob
    nearest = build_knn(coords, k=1, metric="euclidean").indices[:, 0]
    assert (labels[nearest] == labels).mean() > 0.95


def test_umap_fits_a_sample_and_transforms_the_rest_above_the_threshold():
    data, labels = blobs(n=1200, d=12)
    coords = project_umap(data, fit_max=500, fit_sample=400, n_neighbors=10, seed=0, n_epochs=100)
    assert coords.shape == (1200, 2) and np.isfinite(coords).all()
    nearest = build_knn(coords, k=1, metric="euclidean").indices[:, 0]
    assert (labels[nearest] == labels).mean() > 0.9
