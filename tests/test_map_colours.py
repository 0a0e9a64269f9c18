"""What the Map can be coloured by (ui/map_colours.py): the columns offered, clusters with their
names, and each choice built only when asked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ui.map_colours import colour_choices, colour_options, named_clusters


def examples() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c", "d"], "text": ["w"] * 4, "x": np.zeros(4), "y": np.zeros(4),
                         "pca_x": np.zeros(4), "pca_y": np.zeros(4), "split": ["train", "test"] * 2,
                         "label": ["p", "q", "p", "q"], "loss": [0.1, 0.2, 0.3, 0.4],
                         "cluster": np.array([0, 1, -1, 0], dtype=np.int32),
                         "cluster_fine": np.array([2, 3, 4, -1], dtype=np.int32)})


def test_the_label_first_then_every_column_but_ids_text_and_coordinates():
    assert colour_options(examples()) == ["label", "split", "loss", "cluster", "cluster_fine"]


def test_clusters_are_shown_with_their_names_and_noise():
    codes = pd.Series(np.array([3, -1, 0, 3, 5], dtype=np.int32), index=[10, 11, 12, 13, 14])
    named = named_clusters(codes, {3: "3 · cats", 0: "0 · dogs"})
    assert named.tolist() == ["3 · cats", "noise", "0 · dogs", "3 · cats", "5"]
    assert list(named.index) == [10, 11, 12, 13, 14]
    assert named_clusters(codes, {3: "same", 0: "same"}).tolist() == ["same", "noise", "same", "same", "5"]


def test_choices_name_clusters_and_change_key_when_a_cluster_is_renamed():
    table = pd.DataFrame({"level": ["coarse", "coarse", "fine"], "cluster": [0, 1, 2], "name": ["dogs", "cats", "x"]})
    choices = colour_choices(examples(), table)
    assert list(choices) == colour_options(examples())
    assert choices["cluster"].column().tolist() == ["0 · dogs", "1 · cats", "noise", "0 · dogs"]
    assert choices["cluster_fine"].column().tolist() == ["2 · x", "3", "4", "noise"]
    assert choices["loss"].column().tolist() == [0.1, 0.2, 0.3, 0.4] and choices["loss"].key == ()
    renamed = colour_choices(examples(), table.assign(name=["dogs", "lions", "x"]))
    assert renamed["cluster"].key != choices["cluster"].key and renamed["cluster_fine"].key == choices["cluster_fine"].key
    # without a clusters table the numbers themselves
    assert colour_choices(examples(), None)["cluster"].column().tolist() == [0, 1, -1, 0]


def test_a_choice_is_built_only_when_asked():
    calls = []
    frame = examples()

    class Watched(pd.DataFrame):
        def __getitem__(self, key):
            calls.append(key)
            return super().__getitem__(key)

    choices = colour_choices(Watched(frame), None)
    assert calls == [] and len(choices) == 5
    choices["split"].column()
    assert calls == ["split"]
