"""Names shared by the engine, the UI and the pages: one declaration each.

Pages may import this module (and the engine's exception types) directly; everything else
of the engine they reach through ``ui/``. A column name written here is not written again
elsewhere: a page that needs the map columns imports :data:`MAP_COLUMNS`.

Attributes
----------
ROLE_COLUMNS : tuple of str
    The dataset's role columns once loaded: ``id``, ``label``, ``text``, ``image``, ``split``
    (each present or not, by the kind of data).
CONTENT_COLUMNS : tuple of str
    The columns that show what an example is (its id, label, text or image), in the order
    example tables show them.
MAP_COLUMNS : tuple of str
    The 2-D layouts of ``examples.parquet``: UMAP (``x``, ``y``) then PCA (``pca_x``,
    ``pca_y``). Coordinates, not facts about an example, so tables and exports leave them out.
CLUSTER_LEVELS : dict of str to str
    Cluster level (``coarse``, ``fine``) to its column of ``examples.parquet``.
CLUSTER_COLUMNS : tuple of str
    The cluster columns, coarse first.
REGIONS : tuple of str
    The data-map regions of Swayamdipta et al. (2020), in the paper's order.
DECISIONS : tuple of str
    A reviewer's decisions on an example, in the order the Review page offers them.
"""

from __future__ import annotations

__all__ = [
    "CLUSTER",
    "CLUSTER_COLUMNS",
    "CLUSTER_FINE",
    "CLUSTER_LEVELS",
    "CONTENT_COLUMNS",
    "DECISIONS",
    "ID",
    "IMAGE",
    "LABEL",
    "MAP_COLUMNS",
    "PCA_COLUMNS",
    "REGION",
    "REGIONS",
    "RELABEL",
    "ROLE_COLUMNS",
    "SPLIT",
    "TEXT",
    "UMAP_COLUMNS",
    "category_of",
    "split_category",
    "without_map_columns",
]

ID, LABEL, TEXT, IMAGE, SPLIT = "id", "label", "text", "image", "split"
ROLE_COLUMNS = (ID, LABEL, TEXT, IMAGE, SPLIT)
CONTENT_COLUMNS = (ID, LABEL, TEXT, IMAGE)

UMAP_COLUMNS = ("x", "y")
PCA_COLUMNS = ("pca_x", "pca_y")
MAP_COLUMNS = UMAP_COLUMNS + PCA_COLUMNS

CLUSTER, CLUSTER_FINE = "cluster", "cluster_fine"
CLUSTER_LEVELS = {"coarse": CLUSTER, "fine": CLUSTER_FINE}
CLUSTER_COLUMNS = (CLUSTER, CLUSTER_FINE)

REGION = "region"
REGIONS = ("easy-to-learn", "ambiguous", "hard-to-learn")

RELABEL = "relabel"
DECISIONS = ("keep", "drop", RELABEL, "flag")


def category_of(decision: str, new_label: str | None) -> str:
    """A decision as one category: relabels are told apart by target (``relabel:cat``).

    Examples
    --------
    >>> category_of("relabel", "cat"), category_of("keep", None)
    ('relabel:cat', 'keep')
    """
    return f"{RELABEL}:{new_label}" if decision == RELABEL else decision


def split_category(category: str) -> tuple[str, str | None]:
    """The inverse of :func:`category_of`: ``"relabel:cat"`` gives ``("relabel", "cat")``,
    ``"keep"`` gives ``("keep", None)``."""
    decision, _, new_label = category.partition(":")
    return decision, (new_label or None)


def without_map_columns(columns) -> list[str]:
    """``columns`` in their order, less the :data:`MAP_COLUMNS` (for tables and exports)."""
    return [c for c in columns if c not in MAP_COLUMNS]
