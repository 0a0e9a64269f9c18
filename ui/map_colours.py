"""What the Map can be coloured by: every column of the run but the ids, text and coordinates,
each as a :class:`ui.scatter.ColourChoice` (clusters shown with the names users gave them)."""

from __future__ import annotations

import pandas as pd

from analytics.names import CLUSTER_COLUMNS, CLUSTER_LEVELS, MAP_COLUMNS
from ui.scatter import ColourChoice

__all__ = ["colour_choices", "colour_options"]

_NOT_COLOURS = {"id", "text", "image", *MAP_COLUMNS}


def colour_options(examples: pd.DataFrame) -> list[str]:
    """The columns the Map can be coloured by: the label first, then the run's other columns
    (metadata and every score), never the ids, the text, the image paths or the coordinates."""
    return ["label"] + [c for c in examples.columns if c not in _NOT_COLOURS | {"label"}]


def named_clusters(codes: pd.Series, names: dict) -> pd.Series:
    """Cluster numbers as "3 · name" (as they are without a name; -1 is "noise"): categories,
    one text per cluster, not per row."""
    rows, clusters = pd.factorize(codes)
    texts, categories = pd.factorize(pd.Index([names.get(c, "noise" if c < 0 else str(c)) for c in clusters.tolist()],
                                              dtype=object))  # (two names alike are one category)
    return pd.Series(pd.Categorical.from_codes(texts[rows], categories=categories), index=codes.index)


def colour_choices(examples: pd.DataFrame, clusters: pd.DataFrame | None) -> dict[str, ColourChoice]:
    """Every column of :func:`colour_options`, by name. A cluster column comes with its
    clusters' names (``clusters``: the run's clusters table, with the names users gave) and is
    told apart by them, so that a renamed cluster recolours."""
    levels = {column: level for level, column in CLUSTER_LEVELS.items()}
    choices = {}
    for name in colour_options(examples):
        if name in CLUSTER_COLUMNS and clusters is not None:
            level = clusters[clusters["level"] == levels[name]]
            names = {c: f"{c} · {label}" for c, label in zip(level["cluster"], level["name"])}
            choices[name] = ColourChoice(name, lambda n=name, m=names: named_clusters(examples[n], m),
                                         key=tuple(sorted(names.items())))
        else:
            choices[name] = ColourChoice(name, lambda n=name: examples[n])
    return choices
