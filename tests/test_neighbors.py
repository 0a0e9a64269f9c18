"""The shared kNN graph: exact search against a brute-force reference, NN-descent recall."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.neighbors import build_knn, exact_knn, knn_recall


def blobs(n=600, d=16, centres=6, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, d)) * 4
    labels = rng.integers(0, centres, n)
    return (centre[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_search_matches_brute_force(metric):
    data, _ = blobs(n=300)
    indices, distances = exact_knn(data, k=7, metric=metric)
    if metric == "cosine":
        unit = data / np.linalg.norm(data, axis=1, keepdims=True)
        full = 1 - unit @ unit.T
    else:
        full = np.linalg.norm(data[:, None] - data[None], axis=2)
    np.fill_diagonal(full, np.inf)
    reference = np.argsort(full, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(distances, np.take_along_axis(full, reference, axis=1), atol=1e-4)
    agree = np.mean([len(np.intersect1d(a, b)) / 7 for a, b in zip(indices, reference)])
    assert agree > 0.99  # ties may order differently
    assert not (indices == np.arange(300)[:, None]).any()


def test_exact_search_in_blocks_gives_the_same_graph(monkeypatch):
    data, _ = blobs(n=500)
    whole = exact_knn(data, k=5)
    import analytics.neighbors as neighbors

    monkeypatch.setattr(neighbors, "_BLOCK_BYTES", 4 * 500 * 7)  # 7 rows per block
    blocked = exact_knn(data, k=5)
    np.testing.assert_array_equal(whole[0], blocked[0])


def test_duplicates_never_list_a_point_as_its_own_neighbour():
    data = np.repeat(np.eye(4, dtype=np.float32), 5, axis=0)  # 4 groups of 5 identical points
    graph = build_knn(data, k=4, metric="euclidean")
    assert not (graph.indices == np.arange(20)[:, None]).any()
    # each point's 4 neighbours are its identical twins
    assert (graph.indices // 5 == np.arange(20)[:, None] // 5).all()


def test_approximate_graph_reports_its_recall():
    data, labels = blobs(n=3000, d=32)
    graph = build_knn(data, k=10, exact_max=1000, recall_queries=300)
    assert graph.method == "nndescent"
    assert graph.indices.shape == (3000, 10) and graph.indices.dtype == np.int32
    assert not (graph.indices == np.arange(3000)[:, None]).any()
    assert graph.recall > 0.9 and graph.recall_queries == 300
    # the recall it reports is what an independent check measures
    recall, _ = knn_recall(data, graph.indices, n_queries=300, seed=1)
    assert abs(recall - graph.recall) < 0.05
    # neighbours come from the same blob
    assert (labels[graph.indices] == labels[:, None]).mean() > 0.95


def test_with_self_is_what_umap_expects():
    data, _ = blobs(n=50)
    graph = build_knn(data, k=5)
    indices, distances = graph.with_self()
    assert indices.shape == (50, 6) and (indices[:, 0] == np.arange(50)).all()
    assert (distances[:, 0] == 0).all() and (np.diff(distances, axis=1) >= -1e-6).all()


def test_graph_below_the_recall_target_carries_a_warning():
    from analytics.neighbors import RECALL_TARGET, KnnGraph

    indices, distances = np.zeros((4, 2), np.int32), np.zeros((4, 2), np.float32)
    good = KnnGraph(indices, distances, "cosine", "nndescent", RECALL_TARGET, 1000)
    poor = KnnGraph(indices, distances, "cosine", "nndescent", 0.865, 1000)
    assert good.warning is None
    assert "86.5%" in poor.warning and "1,000 points" in poor.warning and "95%" in poor.warning
