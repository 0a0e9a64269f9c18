"""Projections: PCA shape; UMAP keeps neighbourhoods (trustworthiness) with the shared graph."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_a_pca_start_is_scaled_like_umaps_own_and_used():
    from analytics.projection import scaled_start

    start = scaled_start(np.array([[0.0, 1.0], [-4.0, 2.0], [2.0, -1.0]]), seed=0)
    assert start.dtype == np.float32 and np.abs(start).max() == pytest.approx(10.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        scaled_start(np.zeros((3, 3)))
    data, labels = blobs(n=800, d=20)
    graph = build_knn(data, k=15)
    pca = project_pca(data)
    coords = project_umap(data, knn=graph, n_neighbors=16, seed=0, init=pca)
    assert coords.shape == (800, 2) and trustworthiness(data, coords, n_neighbors=10) > 0.9
    nearest = build_knn(coords, k=1, metric="euclidean").indices[:, 0]
    assert (labels[nearest] == labels).mean() > 0.95
    # the start is the layout UMAP refines: with the optimisation skipped it is the PCA map
    # (umap-learn rescales every start to [0, 10] on each axis before optimising)
    unrefined = project_umap(data, knn=graph, n_neighbors=16, seed=0, init=pca, n_epochs=0)
    expected = scaled_start(pca, 0)
    expected = 10 * (expected - expected.min(0)) / (expected.max(0) - expected.min(0))
    np.testing.assert_allclose(unrefined, expected, atol=1e-3)
