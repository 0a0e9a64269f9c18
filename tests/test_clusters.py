"""Clusters: two levels, automatic k, HDBSCAN noise, naming from content, balanced subsets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.clusters import (
    NOISE,
    ClusterConfig,
    Clustering,
    balanced_sample,
    cluster_embeddings,
    cluster_summary,
    ctfidf_terms,
    name_clusters,
)


def blobs(n_per: int = 150, centres: int = 4, dims: int = 16, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, size=(centres, dims))
    groups = np.repeat(np.arange(centres), n_per)
    points = means[groups] + rng.normal(0, spread, size=(len(groups), dims))
    return points.astype(np.float32), groups


def agreement(found: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(truth, found)


def test_kmeans_picks_the_planted_number_of_clusters_and_orders_them_by_size():
    points, truth = blobs(centres=5)
    keep = np.ones(len(points), bool)
    keep[truth == 4] = np.arange((truth == 4).sum()) < 60  # one smaller cluster
    points, truth = points[keep], truth[keep]
    result = cluster_embeddings(points, config=ClusterConfig(seed=0))
    assert result.k == 5
    assert agreement(result.coarse, truth) > 0.99
    sizes = np.bincount(result.coarse)
    assert list(sizes) == sorted(sizes, reverse=True)
    assert sizes[-1] == 60
    assert max(result.silhouette_by_k, key=result.silhouette_by_k.get) == 5


def test_k_can_be_set_and_fine_clusters_nest_inside_coarse_ones():
    points, truth = blobs(centres=6, n_per=100)
    result = cluster_embeddings(points, config=ClusterConfig(k=3, seed=1))
    assert result.k == 3 and result.silhouette_by_k == {}
    assert len(result.fine_parent) > 3
    # each fine cluster lies inside exactly one coarse cluster, the one named as its parent
    for fine_id in np.unique(result.fine):
        parents = np.unique(result.coarse[result.fine == fine_id])
        assert list(parents) == [result.fine_parent[fine_id]]
    # six blobs in three coarse clusters: the fine level separates them again (no fine
    # cluster mixes two blobs)
    from sklearn.metrics import homogeneity_score

    assert homogeneity_score(truth, result.fine) > 0.99


def test_fitting_on_a_sample_assigns_every_example():
    points, truth = blobs(centres=3, n_per=400)
    result = cluster_embeddings(points, config=ClusterConfig(sample_max=300, seed=0))
    assert (result.coarse >= 0).all() and len(result.coarse) == len(points)
    assert agreement(result.coarse, truth) > 0.99
    assert any("sample of 300" in note for note in result.notes)


def test_hdbscan_on_the_map_leaves_scattered_points_as_noise():
    rng = np.random.default_rng(0)
    dense = np.concatenate([rng.normal((0, 0), 0.2, (200, 2)), rng.normal((6, 6), 0.2, (200, 2))])
    scattered = rng.uniform(-20, 26, (20, 2))
    coords = np.concatenate([dense, scattered]).astype(np.float32)
    vectors = np.hstack([coords, rng.normal(0, 0.01, (len(coords), 6))]).astype(np.float32)
    result = cluster_embeddings(vectors, coords=coords, config=ClusterConfig(method="hdbscan", min_cluster_size=20))
    assert result.k == 2
    assert (result.coarse[:400] >= 0).mean() > 0.95
    assert (result.coarse[400:] == NOISE).mean() > 0.7
    assert (result.fine[result.coarse == NOISE] == NOISE).all()


def test_hdbscan_needs_the_map_and_bad_settings_are_refused():
    points, _ = blobs()
    with pytest.raises(ValueError, match="coords"):
        cluster_embeddings(points, config=ClusterConfig(method="hdbscan"))
    with pytest.raises(ValueError, match="method"):
        ClusterConfig(method="spectral")
    with pytest.raises(ValueError, match="at least 1"):
        ClusterConfig(k=0)


def test_clustering_survives_a_round_trip_through_its_cached_form():
    points, _ = blobs(centres=3)
    result = cluster_embeddings(points, config=ClusterConfig(seed=0))
    again = Clustering.from_parts(np.stack([result.coarse, result.fine]), result.to_meta())
    assert (again.coarse == result.coarse).all() and (again.fine == result.fine).all()
    assert again.representatives == result.representatives and again.k == result.k


def test_ctfidf_names_text_clusters_by_their_distinctive_terms():
    texts = [
        "The kernel driver for the network card", "A network driver module for the kernel",
        "kernel module that loads the wifi driver", "network interface driver in the kernel",
        "Chess game with a board and pieces", "A puzzle game played on a board",
        "board game for two players: chess", "card game and board game collection",
        "Python library for parsing JSON", "library to parse XML and JSON in Python",
        "a Python library for JSON schemas", "JSON parsing library with Python bindings",
    ]
    groups = np.repeat([0, 1, 2], 4)
    terms = ctfidf_terms(texts, groups, top=3)
    assert {t for t, _ in terms[0]} == {"kernel", "driver", "network"}
    assert {t for t, _ in terms[1]} == {"game", "board", "chess"}
    assert {t for t, _ in terms[2]} == {"json", "python", "library"}
    # the weights follow tf(t, c) · log(1 + A / f(t)): "kernel" is 4 of cluster 0's 17 terms,
    # 4 of all 4 occurrences; A is the mean number of terms per cluster
    names = name_clusters(groups, kind="text", ids=[str(i) for i in range(12)],
                          labels=pd.Series(["a"] * 12), texts=texts)
    assert names.loc[0, "name"].split(" · ")[0] in {"kernel", "driver", "network"}


def test_ctfidf_weight_matches_the_formula_by_hand():
    texts = ["apple apple pear", "pear plum", "plum plum plum"]
    groups = np.array([0, 0, 1])
    terms = dict(ctfidf_terms(texts, groups, top=3)[0])
    # cluster 0: apple 2, pear 2, plum 1 (5 terms); cluster 1: plum 3 (3 terms); A = 4
    assert terms["apple"] == pytest.approx(2 / 5 * np.log(1 + 4 / 2), abs=1e-6)
    assert terms["plum"] == pytest.approx(1 / 5 * np.log(1 + 4 / 4), abs=1e-6)


def test_tables_are_named_by_the_features_that_deviate_most():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"size": rng.normal(10, 1, 200), "weight": rng.normal(5, 1, 200),
                          "colour": ["red"] * 100 + ["blue"] * 100})
    groups = np.zeros(200, int)
    groups[:50] = 1
    table.loc[:49, "size"] += 6  # cluster 1: much larger
    names = name_clusters(groups, kind="tabular", ids=[str(i) for i in range(200)],
                          labels=pd.Series(["x"] * 200), table=table, feature_columns=["size", "weight", "colour"])
    row = names.set_index("cluster").loc[1]
    assert row["features"][0] == "high size"
    assert "colour = red" in row["features"]


def test_images_are_named_by_their_dominant_label_with_representatives():
    groups = np.array([0] * 10 + [1] * 10)
    labels = pd.Series(["3"] * 9 + ["8"] + ["1"] * 5 + ["7"] * 5)
    names = name_clusters(groups, kind="image", ids=[f"img{i}" for i in range(20)], labels=labels,
                          representatives={0: [4, 2], 1: [15]})
    assert names.loc[0, "name"] == "mostly 3 (90%)"
    assert names.loc[1, "name"].startswith("mixed: ")
    assert names.loc[0, "representatives"] == ["img4", "img2"]


def test_cluster_summary_counts_by_hand():
    examples = pd.DataFrame({
        "cluster": [0, 0, 0, 0, 1, 1, NOISE],
        "label": ["a", "a", "a", "b", "b", "b", "a"],
        "region": ["easy-to-learn", "easy-to-learn", "ambiguous", "hard-to-learn", "ambiguous", "ambiguous",
                   "easy-to-learn"],
        "label_issue": [False, False, False, True, False, True, False],
        "el2n": [0.1, 0.2, 0.3, 0.4, 1.0, 0.0, 0.5],
    })
    correct = np.array([1, 1, 1, 0, 1, 0, 1], bool)
    table = cluster_summary(examples, "cluster", correct=correct, score_columns=["el2n", "label_issue"]).set_index("cluster")
    assert table.loc[0, "size"] == 4 and table.loc[0, "share"] == pytest.approx(4 / 7)
    assert table.loc[0, "purity"] == 0.75 and table.loc[0, "top_label"] == "a"
    assert table.loc[0, "label_mix"] == "a 75% · b 25%"
    assert table.loc[0, "accuracy"] == 0.75 and table.loc[1, "accuracy"] == 0.5
    assert table.loc[0, "accuracy_low"] < 0.75 < table.loc[0, "accuracy_high"]
    assert table.loc[0, "easy-to-learn_share"] == 0.5 and table.loc[1, "ambiguous_share"] == 1.0
    assert table.loc[1, "label_issue_share"] == 0.5
    assert table.loc[0, "mean_el2n"] == pytest.approx(0.25)
    assert table.loc[NOISE, "name"] == "noise (unassigned)"


@pytest.mark.parametrize("size,cap", [(100, 0.2), (100, 0.5), (37, 0.3), (500, 0.25)])
def test_balanced_sample_never_exceeds_its_cap(size, cap):
    groups = np.repeat(np.arange(6), [500, 200, 60, 20, 10, 5])
    rows = balanced_sample(groups, size, cap=cap, seed=1)
    assert len(np.unique(rows)) == len(rows)
    counts = np.bincount(groups[rows], minlength=6)
    assert counts.max() <= int(np.floor(cap * size))
    assert (counts <= np.bincount(groups)).all()
    # as many as the caps and sizes allow
    assert len(rows) == min(size, int(np.minimum(np.bincount(groups), int(np.floor(cap * size))).sum()))


def test_balanced_sample_shares_equally_when_it_can_and_skips_noise():
    groups = np.array([0] * 100 + [1] * 100 + [2] * 100 + [NOISE] * 100)
    rows = balanced_sample(groups, 60, cap=0.5, seed=0)
    assert list(np.bincount(groups[rows])) == [20, 20, 20]
    with pytest.raises(ValueError, match="cap"):
        balanced_sample(groups, 3, cap=0.2)


def test_renaming_a_cluster_needs_the_reviewer_role(tmp_path):
    """Names are shared by everyone: a viewer (or nobody) cannot rename; a reviewer can."""
    from analytics.clusters import load_cluster_names, save_cluster_name
    from analytics.store import ReviewError, ReviewStore
    from analytics.workspace import Workspace

    workspace = Workspace(tmp_path / "workspace")
    with ReviewStore.open(f"sqlite:///{tmp_path / 'review.sqlite'}", admins=["root"],
                          default_role="viewer") as store:
        for actor, message in (("mallory", "mallory is a viewer and may not rename clusters"),
                               ("", "No acting identity")):
            with pytest.raises(ReviewError, match=message):
                save_cluster_name(workspace, "fp", "run", "coarse", 3, "stolen", actor=actor, store=store)
        assert load_cluster_names(workspace, "fp", "run") == {"coarse": {}, "fine": {}}
        store.grant_role("Alice", "reviewer", actor="root")
        assert save_cluster_name(workspace, "fp", "run", "coarse", 3, "cats", actor="alice", store=store) == "cats"
        assert load_cluster_names(workspace, "fp", "run")["coarse"] == {3: "cats"}
