"""The engine's shared names: one declaration, re-exported where older code imports it."""

from __future__ import annotations

import numpy as np
import pytest

from analytics import names, store
from analytics.scores import regions


def test_category_of_and_split_category_are_inverse():
    assert names.category_of("relabel", "cat") == "relabel:cat"
    assert names.category_of("keep", None) == "keep"
    for decision, new_label in [("relabel", "cat"), ("relabel", "a:b"), ("drop", None), ("flag", None)]:
        assert names.split_category(names.category_of(decision, new_label)) == (decision, new_label)


def test_older_modules_reexport_the_same_objects():
    assert store.DECISIONS is names.DECISIONS and store.category_of is names.category_of
    assert regions.REGIONS is names.REGIONS


@pytest.mark.parametrize("confidence, variability, region", [(0.9, 0.1, "easy-to-learn"), (0.5, 0.3, "ambiguous"),
                                                             (0.2, 0.05, "hard-to-learn")])
def test_every_region_assigned_is_a_declared_region(confidence, variability, region):
    got = regions.assign_regions(np.array([confidence]), np.array([variability]))
    assert got[0] == region and region in names.REGIONS


def test_column_groups():
    assert names.MAP_COLUMNS == ("x", "y", "pca_x", "pca_y")
    assert tuple(names.CLUSTER_LEVELS.values()) == names.CLUSTER_COLUMNS == ("cluster", "cluster_fine")
    assert names.without_map_columns(["id", "x", "label", "pca_y", "region"]) == ["id", "label", "region"]
    assert set(names.CONTENT_COLUMNS) < set(names.ROLE_COLUMNS)
