"""Subpopulations: cluster the embeddings at two levels and name every cluster from its content.

Two methods:

- ``kmeans`` (default): k-means on the embeddings reduced to at most 50 principal components
  (rows L2-normalised first when the embedding's metric is cosine). ``k`` is chosen by the
  best silhouette over a ladder of candidates, computed on a sample, unless it is given.
- ``hdbscan``: HDBSCAN (density-based; Campello et al. 2013, as in scikit-learn) on the 2-D
  map coordinates. It may leave points unassigned: noise, cluster id ``-1``.

Both fit on at most ``sample_max`` examples and assign the rest (nearest centroid for k-means,
nearest fitted point on the map for HDBSCAN), so clustering stays linear in n. The fine level
splits every coarse cluster again with k-means (its own k by silhouette), so a big cluster can
be opened up. Coarse ids are ordered by size (0 is the largest); fine ids are global integers.

Names come from content (:func:`name_clusters`): class-based TF-IDF terms for text, dominant
labels and representative members (the members nearest the centroid) for images, and the
features that deviate most from the whole dataset for tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from analytics.names import REGIONS

if TYPE_CHECKING:  # the store pulls in SQLAlchemy; clustering does not need it
    from analytics.store import ReviewStore

__all__ = [
    "NOISE", "METHODS", "ClusterConfig", "Clustering", "cluster_embeddings", "reduce_for_clustering",
    "ctfidf_terms", "name_clusters", "cluster_summary", "balanced_sample", "load_cluster_names",
    "save_cluster_name", "apply_names",
]

NOISE = -1
ALGORITHM_VERSION = 4  # part of the cache key: bump when the clustering changes its results
FINE_CHOOSE_MAX = 1_500  # a fine level's k is chosen on at most this many members of its coarse cluster
FINE_SAMPLE_MAX = 5_000  # and then fitted on at most this many
METHODS = ("kmeans", "hdbscan")
K_LADDER = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ClusterConfig:
    """How to cluster. ``k=None`` picks k by silhouette; ``fine=False`` skips the fine level."""

    method: str = "kmeans"
    k: int | None = None
    k_max: int = 30
    fine: bool = True
    fine_k_max: int = 8
    fine_min_size: int = 40
    min_cluster_size: int | None = None  # HDBSCAN; None: 1% of the fitted sample (at least 10)
    sample_max: int = 20_000
    silhouette_sample: int = 4_000
    n_representatives: int = 5
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"cluster method must be one of {METHODS}, not {self.method!r}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"the number of clusters must be at least 1, not {self.k}")
        if self.k_max < 2 or self.fine_k_max < 2:
            raise ValueError("k_max and fine_k_max must be at least 2")

    def params(self) -> dict:
        return {**asdict(self), "version": ALGORITHM_VERSION}


@dataclass(frozen=True, eq=False)
class Clustering:
    """Cluster ids per example at two levels, and how they were chosen."""

    coarse: np.ndarray  # (n,) int32, NOISE for unassigned
    fine: np.ndarray  # (n,) int32, global fine ids, NOISE for unassigned
    fine_parent: np.ndarray  # (n_fine,) coarse id of every fine cluster
    method: str
    k: int
    silhouette_by_k: dict[int, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    representatives: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # level -> cluster -> rows

    def to_meta(self) -> dict:
        """Everything but the per-example arrays, as JSON-friendly values."""
        return {"method": self.method, "k": self.k, "fine_parent": [int(p) for p in self.fine_parent],
                "silhouette_by_k": {str(k): v for k, v in self.silhouette_by_k.items()},
                "notes": list(self.notes),
                "representatives": {level: {str(c): rows for c, rows in by_cluster.items()}
                                    for level, by_cluster in self.representatives.items()}}

    @classmethod
    def from_parts(cls, assignments: np.ndarray, meta: dict) -> "Clustering":
        return cls(coarse=np.asarray(assignments[0], dtype=np.int32), fine=np.asarray(assignments[1], dtype=np.int32),
                   fine_parent=np.asarray(meta["fine_parent"], dtype=np.int32), method=meta["method"], k=meta["k"],
                   silhouette_by_k={int(k): v for k, v in meta["silhouette_by_k"].items()},
                   notes=tuple(meta["notes"]),
                   representatives={level: {int(c): list(rows) for c, rows in by_cluster.items()}
                                    for level, by_cluster in meta["representatives"].items()})

    @property
    def n_clusters(self) -> int:
        return int(self.coarse.max()) + 1 if (self.coarse >= 0).any() else 0


# ----------------------------------------------------------------------------- clustering


def reduce_for_clustering(vectors: np.ndarray, *, metric: str = "euclidean", dims: int = 50,
                          sample_max: int = 20_000, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """At most ``dims`` principal components (PCA fitted on a sample), float32, in chunks."""
    from sklearn.decomposition import PCA

    n, d = vectors.shape
    cosine = metric == "cosine"

    def prepare(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if cosine:
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            block = block / np.maximum(norms, 1e-12)
        return block

    if d <= dims:
        return np.concatenate([prepare(vectors[i:i + chunk]) for i in range(0, n, chunk)]) if n else \
            np.zeros((0, d), np.float32)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, sample_max), replace=False))
    pca = PCA(n_components=min(dims, len(fit_rows)), svd_solver="randomized" if len(fit_rows) > 2000 else "full",
              random_state=seed).fit(prepare(vectors[fit_rows]))
    out = np.empty((n, pca.n_components_), dtype=np.float32)
    for start in range(0, n, chunk):
        out[start:start + chunk] = pca.transform(prepare(vectors[start:start + chunk]))
    return out


def _silhouette(points: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float:
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    if len(np.unique(labels)) < 2:
        return -1.0
    size = min(sample, len(points))
    with threadpool_limits(limits=1):
        return float(silhouette_score(points, labels, sample_size=size if size < len(points) else None,
                                      random_state=seed))


def _kmeans(points: np.ndarray, k: int, seed: int, n_init: int = 3):
    """k-means on at most a sample's worth of points. One thread: on these sizes sklearn's
    OpenMP threads cost more in synchronisation than they give (10x slower measured on 1,500
    points, 1.7x on 20k, on a busy 2-core machine)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=200).fit(points)


def _auto_kmeans(points: np.ndarray, *, k: int | None, k_max: int, silhouette_sample: int,
                 seed: int, min_size: int = 10, n_init: int = 3) -> tuple[object, dict[int, float]]:
    """Fit k-means on ``points``; with ``k=None`` try the ladder (no k that would leave fewer than
    ``min_size`` points per cluster on average) and keep the best silhouette."""
    n = len(points)
    if k is not None:
        return _kmeans(points, min(k, n), seed, n_init), {}
    candidates = [c for c in K_LADDER if c <= min(k_max, n // min_size)]
    if not candidates:
        return _kmeans(points, 1, seed), {}
    scores: dict[int, float] = {}
    best = None
    for candidate in candidates:
        model = _kmeans(points, candidate, seed, n_init)
        scores[candidate] = round(_silhouette(points, model.labels_, silhouette_sample, seed), 5)
        if best is None or scores[candidate] > scores[best[0]]:
            best = (candidate, model)
    return best[1], scores


def _predict_chunks(model, points: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    return np.concatenate([model.predict(points[i:i + chunk]) for i in range(0, len(points), chunk)]) \
        if len(points) else np.zeros(0, np.int64)


def _order_by_size(labels: np.ndarray) -> np.ndarray:
    """Relabel so cluster 0 is the largest; noise stays NOISE."""
    labels = np.asarray(labels, dtype=np.int64)
    assigned = labels >= 0
    if not assigned.any():
        return labels.astype(np.int32)
    counts = np.bincount(labels[assigned])
    order = np.argsort(-counts, kind="stable")
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    out = np.full(len(labels), NOISE, dtype=np.int32)
    out[assigned] = new_id[labels[assigned]]
    return out


def cluster_embeddings(
    vectors: np.ndarray,
    *,
    config: ClusterConfig | None = None,
    metric: str = "euclidean",
    coords: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Clustering:
    """Cluster ``vectors`` (n, d) at a coarse and a fine level.

    ``coords`` (n, 2), the map, is needed by ``hdbscan``. Returns :class:`Clustering`.
    """
    config = config or ClusterConfig()
    report = progress or (lambda fraction, message: None)
    n = len(vectors)
    if n == 0:
        raise ValueError("cannot cluster an empty dataset")
    rng = np.random.default_rng(config.seed)
    notes: list[str] = []
    report(0.0, "reducing the embeddings")
    reduced = reduce_for_clustering(vectors, metric=metric, sample_max=config.sample_max, seed=config.seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, config.sample_max), replace=False))
    if len(fit_rows) < n:
        notes.append(f"fitted on a sample of {len(fit_rows):,} of {n:,} examples; the rest assigned")

    silhouettes: dict[int, float] = {}
    report(0.1, f"{config.method}: coarse clusters")
    if config.method == "kmeans":
        model, silhouettes = _auto_kmeans(reduced[fit_rows], k=config.k, k_max=config.k_max,
                                          silhouette_sample=config.silhouette_sample, seed=config.seed)
        coarse = _predict_chunks(model, reduced)
    else:
        if coords is None or len(coords) != n:
            raise ValueError("hdbscan clusters the 2-D map: pass coords of shape (n, 2)")
        coarse = _hdbscan(np.asarray(coords, dtype=np.float32), fit_rows, config)
        if (coarse == NOISE).all():
            notes.append("HDBSCAN found no dense cluster; every point is noise")
    coarse = _order_by_size(coarse)
    k = int(coarse.max()) + 1 if (coarse >= 0).any() else 0

    report(0.6, "fine clusters")
    fine = np.full(n, NOISE, dtype=np.int32)
    parents: list[int] = []
    for cluster in range(k):
        members = np.flatnonzero(coarse == cluster)
        if config.fine and len(members) >= config.fine_min_size:
            sub = _split_cluster(reduced, members, config, rng)
        else:
            sub = np.zeros(len(members), dtype=np.int32)
        fine[members] = len(parents) + sub
        parents.extend([cluster] * (int(sub.max()) + 1))
        report(0.6 + 0.4 * (cluster + 1) / max(k, 1), f"fine clusters: {cluster + 1} of {k}")
    representatives = {"coarse": _all_representatives(reduced, coarse, config.n_representatives),
                       "fine": _all_representatives(reduced, fine, config.n_representatives)}
    return Clustering(coarse=coarse, fine=fine, fine_parent=np.asarray(parents, dtype=np.int32),
                      method=config.method, k=k, silhouette_by_k=silhouettes, notes=tuple(notes),
                      representatives=representatives)


def _split_cluster(reduced: np.ndarray, members: np.ndarray, config: ClusterConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """Fine clusters of one coarse cluster's ``members`` (row indices into ``reduced``), 0 the
    largest: k chosen by silhouette on a small sample, then one k-means fit on a larger one.
    ``rng`` draws the samples."""
    choose = members if len(members) <= FINE_CHOOSE_MAX else \
        np.sort(rng.choice(members, size=FINE_CHOOSE_MAX, replace=False))
    _, scores = _auto_kmeans(reduced[choose], k=None, k_max=config.fine_k_max,
                             silhouette_sample=1000, seed=config.seed,
                             min_size=max(10, config.fine_min_size // 2), n_init=1)
    fine_k = max(scores, key=scores.get) if scores else 1
    sample = members if len(members) <= FINE_SAMPLE_MAX else \
        np.sort(rng.choice(members, size=FINE_SAMPLE_MAX, replace=False))
    model = _kmeans(reduced[sample], fine_k, config.seed, n_init=1)
    return _order_by_size(_predict_chunks(model, reduced[members]))


def _hdbscan(coords: np.ndarray, fit_rows: np.ndarray, config: ClusterConfig) -> np.ndarray:
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import KDTree

    sample = coords[fit_rows]
    min_size = config.min_cluster_size or max(10, int(0.01 * len(fit_rows)))
    fitted = HDBSCAN(min_cluster_size=min_size, min_samples=min(10, min_size), copy=True).fit(sample).labels_
    if len(fit_rows) == len(coords):
        return fitted
    tree = KDTree(sample)
    labels = np.empty(len(coords), dtype=np.int64)
    for start in range(0, len(coords), 200_000):
        nearest = tree.query(coords[start:start + 200_000], k=1, return_distance=False)[:, 0]
        labels[start:start + 200_000] = fitted[nearest]
    return labels


# ----------------------------------------------------------------------------- naming

_TOKEN = r"(?u)\b[^\W\d_][\w+\-]*[\w+]\b"


def ctfidf_terms(texts: Sequence[str], groups: np.ndarray, *, top: int = 5, max_docs_per_group: int = 2_000,
                 seed: int = 0) -> dict[int, list[tuple[str, float]]]:
    """The most distinctive terms of each group of texts, by class-based TF-IDF.

    Every group's texts are one document (Grootendorst 2022, BERTopic): the weight of term t in
    group c is ``tf(t, c) · log(1 + A / f(t))``, with ``tf`` the term's frequency in c divided
    by c's total term count, ``f(t)`` the term's count over all groups and ``A`` the average
    number of terms per group. English stop words and tokens without a letter are left out.
    Groups with more than ``max_docs_per_group`` texts are sampled. Noise (-1) is skipped.
    """
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    rows: list[np.ndarray] = []
    for group in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == group)
        if len(members) > max_docs_per_group:
            members = np.sort(rng.choice(members, size=max_docs_per_group, replace=False))
        rows.append(members)
    if not rows:
        return {}
    chosen = np.concatenate(rows)
    docs = [str(texts[i]) if texts[i] is not None else "" for i in chosen]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=_TOKEN, lowercase=True,
                                 min_df=2 if len(docs) >= 200 else 1, max_features=50_000)
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError:  # nothing but stop words
        return {int(g): [] for g in np.unique(groups[groups >= 0])}
    doc_group = groups[chosen]
    present = np.unique(doc_group)
    position = {g: i for i, g in enumerate(present)}
    indicator = sparse.csr_matrix((np.ones(len(chosen)), ([position[g] for g in doc_group], np.arange(len(chosen)))),
                                  shape=(len(present), len(chosen)))
    per_group = (indicator @ counts).tocsr().astype(np.float64)  # groups × terms
    totals = np.asarray(per_group.sum(axis=1)).ravel()
    term_totals = np.asarray(per_group.sum(axis=0)).ravel()
    average = totals.mean()
    idf = np.log1p(average / np.maximum(term_totals, 1e-12))
    tf = sparse.diags(1.0 / np.maximum(totals, 1e-12)) @ per_group
    weights = (tf @ sparse.diags(idf)).toarray()
    vocabulary = vectorizer.get_feature_names_out()
    out: dict[int, list[tuple[str, float]]] = {}
    for g, i in position.items():
        row = weights[i]
        order = np.argsort(-row, kind="stable")[:top]
        out[int(g)] = [(str(vocabulary[j]), round(float(row[j]), 6)) for j in order if row[j] > 0]
    return out


def _all_representatives(reduced: np.ndarray, groups: np.ndarray, count: int) -> dict[int, list[int]]:
    """Per cluster, the rows of the ``count`` members nearest its centroid in the reduced space
    (approximate medoids), nearest first."""
    out: dict[int, list[int]] = {}
    for cluster in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == cluster)
        points = reduced[members]
        distance = ((points - points.mean(axis=0)) ** 2).sum(axis=1)
        out[int(cluster)] = [int(r) for r in members[np.argsort(distance, kind="stable")[:count]]]
    return out


def _label_phrase(labels: pd.Series) -> str:
    shares = labels.astype(str).value_counts(normalize=True)
    if shares.empty:
        return "empty"
    top, share = shares.index[0], shares.iloc[0]
    if share >= 0.6 or len(shares) == 1:
        return f"mostly {top} ({share:.0%})"
    second = shares.index[1]
    return f"mixed: {top} ({share:.0%}), {second} ({shares.iloc[1]:.0%})"


def _feature_phrase(table: pd.DataFrame, members: np.ndarray, stats: dict, top: int = 2) -> list[str]:
    """The features whose mean (numeric, in standard deviations) or share (categorical) in the
    cluster differs most from the whole dataset."""
    candidates: list[tuple[float, str]] = []
    for column, (mean, std) in stats["numeric"].items():
        value = table[column].iloc[members].mean()
        if std > 0 and np.isfinite(value):
            z = (value - mean) / std
            candidates.append((abs(z), f"{'high' if z > 0 else 'low'} {column}"))
    for column, shares in stats["categorical"].items():
        local = table[column].iloc[members].astype("string").value_counts(normalize=True)
        if local.empty:
            continue
        value, share = local.index[0], local.iloc[0]
        base = shares.get(value, 0.0)
        # a share difference, scaled like a z-score for a proportion
        spread = np.sqrt(max(base * (1 - base), 1e-6))
        candidates.append((abs(share - base) / spread, f"{column} = {value}"))
    candidates.sort(key=lambda item: -item[0])
    return [phrase for _, phrase in candidates[:top]]


def _feature_stats(table: pd.DataFrame, columns: Sequence[str]) -> dict:
    numeric, categorical = {}, {}
    for column in columns:
        values = table[column]
        if pd.api.types.is_bool_dtype(values):
            categorical[column] = values.astype("string").value_counts(normalize=True).to_dict()
        elif pd.api.types.is_numeric_dtype(values):
            numeric[column] = (float(values.mean()), float(values.std(ddof=0)))
        elif values.nunique(dropna=True) <= 30:
            categorical[column] = values.astype("string").value_counts(normalize=True).to_dict()
    return {"numeric": numeric, "categorical": categorical}


def name_clusters(
    assignments: np.ndarray,
    *,
    kind: str,
    ids: Sequence[str],
    labels: pd.Series,
    texts: Sequence[str] | None = None,
    table: pd.DataFrame | None = None,
    feature_columns: Sequence[str] = (),
    representatives: dict[int, list[int]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per cluster: ``cluster``, ``name``, ``terms`` (text), ``features`` (tables),
    ``representatives`` (ids of the members nearest the centroid).

    Text clusters are named by their top three c-TF-IDF terms, tables by the two features that
    deviate most, images (and anything else) by their dominant label; the label phrase is used
    whenever content gives nothing.
    """
    assignments = np.asarray(assignments)
    ids = np.asarray(ids, dtype=object)
    clusters = [int(c) for c in np.unique(assignments) if c >= 0]
    terms = ctfidf_terms(texts, assignments, seed=seed) if kind == "text" and texts is not None else {}
    stats = _feature_stats(table, feature_columns) if table is not None and len(feature_columns) else None
    rows = []
    for cluster in clusters:
        members = np.flatnonzero(assignments == cluster)
        label_phrase = _label_phrase(labels.iloc[members])
        cluster_terms = [t for t, _ in terms.get(cluster, [])]
        features = _feature_phrase(table, members, stats) if stats is not None else []
        if cluster_terms:
            name = " · ".join(cluster_terms[:3])
        elif features:
            name = " · ".join(features)
        else:
            name = label_phrase
        chosen = (representatives or {}).get(cluster) or members[:5]
        rows.append({"cluster": cluster, "name": name, "label_phrase": label_phrase, "terms": cluster_terms,
                     "features": features, "representatives": [str(i) for i in ids[chosen]]})
    return pd.DataFrame(rows, columns=["cluster", "name", "label_phrase", "terms", "features", "representatives"])


# ----------------------------------------------------------------------------- per-cluster table

def cluster_summary(
    examples: pd.DataFrame,
    column: str,
    *,
    names: pd.DataFrame | None = None,
    correct: np.ndarray | None = None,
    score_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per cluster of ``examples[column]``: size, share, label mix and purity, accuracy
    (from ``correct``) with a 95% Wilson interval, region shares, share of likely label issues and
    the mean of every numeric score. Noise (-1), when present, is a row of its own."""
    from analytics.slices import wilson_interval

    groups = examples[column].to_numpy()
    n = len(examples)
    labels = examples["label"].astype(str)
    frame = pd.DataFrame({"cluster": groups})
    out = frame.groupby("cluster").size().rename("size").to_frame()
    out["share"] = out["size"] / max(n, 1)
    crosstab = pd.crosstab(groups, labels)
    crosstab.index.name = "cluster"
    purity = crosstab.max(axis=1) / crosstab.sum(axis=1)
    out["top_label"] = crosstab.idxmax(axis=1)
    out["purity"] = purity
    out["label_mix"] = [
        " · ".join(f"{label} {count / row.sum():.0%}" for label, count in row.sort_values(ascending=False).head(3).items()
                   if count > 0)
        for _, row in crosstab.iterrows()]
    if correct is not None:
        correct = np.asarray(correct, dtype=bool)
        hits = pd.Series(correct).groupby(groups).sum()
        out["accuracy"] = hits / out["size"]
        low, high = wilson_interval(hits.to_numpy(), out["size"].to_numpy())
        out["accuracy_low"], out["accuracy_high"] = low, high
    if "region" in examples.columns:
        regions = pd.crosstab(groups, examples["region"], normalize="index")
        for region in REGIONS:
            out[f"{region}_share"] = regions[region] if region in regions.columns else 0.0
    if "label_issue" in examples.columns:
        out["label_issue_share"] = examples["label_issue"].astype(float).groupby(groups).mean()
    numeric = [c for c in score_columns if c in examples.columns and c != "label_issue"
               and pd.api.types.is_numeric_dtype(examples[c]) and not pd.api.types.is_bool_dtype(examples[c])]
    if numeric:
        means = examples[numeric].astype(float).groupby(groups).mean()
        for c in numeric:
            out[f"mean_{c}"] = means[c]
    out = out.reset_index()
    if names is not None and len(names):
        out = out.merge(names, on="cluster", how="left")
        out["name"] = out["name"].fillna("noise")
    else:
        out["name"] = [("noise" if c == NOISE else f"cluster {c}") for c in out["cluster"]]
    out.loc[out["cluster"] == NOISE, "name"] = "noise (unassigned)"
    first = ["cluster", "name", "size", "share", "top_label", "purity", "label_mix"]
    return out[first + [c for c in out.columns if c not in first]]


# ----------------------------------------------------------------------------- balanced subsets


def balanced_sample(groups: np.ndarray, size: int, *, cap: float = 0.2, seed: int = 0,
                    include_noise: bool = False) -> np.ndarray:
    """Row indices of a subset of about ``size`` examples balanced across clusters.

    Every cluster gets an equal share, at most its own size and at most ``cap`` × ``size``
    (water-filling: what a small cluster cannot use goes to the others). Members are drawn
    uniformly at random within each cluster. The result is smaller than ``size`` when the caps
    or the clusters' sizes do not allow more; it never gives one cluster more than the cap.
    Returns sorted int64 indices.
    """
    groups = np.asarray(groups)
    if size < 1:
        raise ValueError(f"the subset size must be at least 1, not {size}")
    if not 0 < cap <= 1:
        raise ValueError(f"the cap must be a share in (0, 1], not {cap}")
    eligible = groups if include_noise else groups[groups != NOISE]
    names, counts = np.unique(eligible, return_counts=True)
    if len(names) == 0:
        return np.zeros(0, dtype=np.int64)
    limit = int(np.floor(cap * size))
    if limit < 1:
        raise ValueError(f"a cap of {cap:.0%} of {size:,} examples allows no example per cluster")
    room = np.minimum(counts, limit)
    take = np.zeros(len(names), dtype=np.int64)
    remaining = min(size, int(room.sum()))
    order = np.argsort(room, kind="stable")
    for position, index in enumerate(order):  # smallest first: their unused share flows on
        fair = remaining // (len(order) - position)
        take[index] = min(room[index], fair)
        remaining -= take[index]
    for index in order[::-1]:  # rounding leftovers, largest rooms first
        if remaining == 0:
            break
        extra = min(room[index] - take[index], remaining)
        take[index] += extra
        remaining -= extra
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(groups == name), size=int(count), replace=False)
              for name, count in zip(names, take) if count > 0]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- names set by users

NAME_MAX = 120


def load_cluster_names(workspace, fingerprint: str, run_path: str) -> dict[str, dict[int, str]]:
    """Names the users gave to clusters of a run: ``{"coarse": {id: name}, "fine": {...}}``."""
    saved = workspace.load(fingerprint, "cluster_names", {"run": str(run_path)}, fmt="json") or {}
    return {level: {int(c): str(n) for c, n in saved.get(level, {}).items()} for level in ("coarse", "fine")}


def save_cluster_name(workspace, fingerprint: str, run_path: str, level: str, cluster: int, name: str, *,
                      actor: str, store: "ReviewStore") -> str:
    """Rename one cluster for everyone (an empty name restores the automatic one); returns the
    stored name.

    ``actor`` needs the team role ``reviewer`` or above in ``store`` (the review store keeps the
    roles); otherwise :class:`analytics.store.ReviewError` is raised and nothing is saved.
    """
    store.authorize(actor, action="rename clusters")
    if level not in ("coarse", "fine"):
        raise ValueError(f"level must be 'coarse' or 'fine', not {level!r}")
    name = " ".join(str(name).split())
    if len(name) > NAME_MAX:
        raise ValueError(f"a cluster name may have at most {NAME_MAX} characters (this one has {len(name)})")
    names = load_cluster_names(workspace, fingerprint, run_path)
    if name:
        names[level][int(cluster)] = name
    else:
        names[level].pop(int(cluster), None)
    workspace.save(fingerprint, "cluster_names", {"run": str(run_path)},
                   {lvl: {str(c): n for c, n in by_id.items()} for lvl, by_id in names.items()}, fmt="json")
    return name


def apply_names(clusters: pd.DataFrame, names: dict[str, dict[int, str]]) -> pd.DataFrame:
    """``clusters`` (the run's table) with user names in ``name`` and the automatic one kept in
    ``auto_name``."""
    out = clusters.copy()
    out["auto_name"] = out["name"]
    for level, by_id in names.items():
        for cluster, name in by_id.items():
            out.loc[(out["level"] == level) & (out["cluster"] == cluster), "name"] = name
    return out
