"""Several annotators: the consensus label of each example, how sure that consensus is, and how
good each annotator is (CROWDLAB, via ``cleanlab.multiannotator``).

Two sources of annotations:

- a dataset with several label columns, one per annotator (the column role ``annotator``,
  :class:`analytics.datasets.ColumnRoles`): :func:`dataset_annotators`;
- a review session, where each reviewer's current decisions count as that reviewer's labels:
  :func:`reviewer_quality`. A ``keep`` is the example's current label, a ``relabel`` its new
  label; a ``drop`` (the example should leave the dataset) and a ``flag`` (unsure, look again)
  say nothing about the class, so they count as *not labelled*.

How it is computed (:func:`compute_annotators`):

- **With the run's out-of-fold probabilities** (``heldout_probs.npy``), CROWDLAB (Goh, Mueller
  and Northcutt 2022): :func:`cleanlab.multiannotator.get_label_quality_multiannotator` with
  ``consensus_method="best_quality"`` and ``quality_method="crowdlab"``. The consensus is the
  class of highest posterior, where the posterior weighs the model's probabilities against each
  annotator's label by how often each agrees with the others. The consensus quality is
  cleanlab's label-quality score of the consensus under that posterior (0–1, lower = more likely
  wrong); an annotator's quality blends the mean label quality of their labels with their
  agreement with the consensus, weighted as the model against the annotators.
- **Without probabilities**, a plain majority vote, scored as cleanlab's
  ``consensus_method="majority_vote"``, ``quality_method="agreement"`` (computed here,
  vectorised; cleanlab counts votes example by example): the consensus quality is the share of
  the example's annotators who chose the consensus (1 for an example with one annotation), an
  annotator's quality the share of their labels, on examples labelled by two or more, that
  match the consensus. Ties go to the class chosen most often over all annotations, then to
  the first in class order, so the result is the same on every run (the labels
  :func:`majority_vote` gives the loader when there is no label column).
- **With probabilities but no example labelled twice** (each reviewer took other examples),
  annotators cannot be compared with each other: the consensus is the one label given, its
  quality and each annotator's quality the model's label-quality scores
  (``cleanlab.rank.get_label_quality_scores``; an annotator's is the mean over their labels).

Examples nobody labelled get an empty consensus and NaN figures; annotators who labelled
nothing get NaN quality and ``n_labelled`` 0. The ``note`` of the result says which way was
taken.

Reference: Goh, Mueller, Northcutt, "CROWDLAB: Supervised learning to infer consensus labels and
quality scores for data with multiple annotators", NeurIPS 2022 Human in the Loop Learning
workshop (arXiv:2210.06812).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "ANNOTATORS_FILE",
    "ANNOTATOR_COLUMNS",
    "EXAMPLE_COLUMNS",
    "AnnotatorReport",
    "annotation_codes",
    "compute_annotators",
    "dataset_annotators",
    "majority_vote",
    "review_annotations",
    "reviewer_quality",
]

#: Per-example columns (for ``examples.parquet``): the consensus class ("" when nobody labelled
#: the example), its quality in [0, 1] (lower = more likely wrong; NaN when nobody labelled it),
#: and the share of the example's annotators who chose it.
EXAMPLE_COLUMNS = ("consensus_label", "consensus_quality", "annotator_agreement")
#: Columns of the per-annotator table (``annotators.parquet``), lowest quality first.
ANNOTATOR_COLUMNS = ("annotator", "quality", "agreement_with_consensus", "n_labelled", "worst_class")
#: File name of the per-annotator table in a run folder.
ANNOTATORS_FILE = "annotators.parquet"

CROWDLAB, MAJORITY_VOTE, MODEL_ONLY, NO_LABELS = "crowdlab", "majority_vote", "model_only", "none"
_MAX_SHOWN = 5


@dataclass(frozen=True, eq=False)
class AnnotatorReport:
    """Consensus and annotator quality (see :func:`compute_annotators`).

    Attributes
    ----------
    examples : DataFrame of shape (n_examples, 4)
        ``id`` and :data:`EXAMPLE_COLUMNS`, row i = example i of the input.
    annotators : DataFrame of shape (n_annotators, 5)
        :data:`ANNOTATOR_COLUMNS`, lowest quality first (NaN last): ``quality`` and
        ``agreement_with_consensus`` in [0, 1], higher = better; ``n_labelled`` the examples
        the annotator labelled; ``worst_class`` the class of their labels that most often
        disagrees with the consensus ("" when unknown).
    method : {"crowdlab", "majority_vote", "model_only", "none"}
        How it was computed (see the module docstring); "none" when nothing was labelled.
    note : str
        One or two sentences for the user on how, and what is missing.
    """

    examples: pd.DataFrame
    annotators: pd.DataFrame
    method: str
    note: str

    def summary(self) -> dict:
        """JSON-ready figures for ``issues.json``: method, note, counts and the annotator table."""
        labelled = self.examples["consensus_label"].ne("")
        quality = self.examples.loc[labelled, "consensus_quality"]
        agreement = self.examples.loc[labelled, "annotator_agreement"]
        return {
            "method": self.method,
            "note": self.note,
            "n_annotators": int(len(self.annotators)),
            "n_examples_annotated": int(labelled.sum()),
            "n_examples_disputed": int((agreement < 1).sum()),
            "mean_consensus_quality": _json_number(quality.mean() if len(quality) else np.nan),
            "annotators": [{key: _json_number(value) for key, value in row.items()}
                           for row in self.annotators.to_dict(orient="records")],
        }


def annotation_codes(labels: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Annotators' labels as class indices, the form ``cleanlab.multiannotator`` takes.

    Parameters
    ----------
    labels : DataFrame of shape (n_examples, n_annotators)
        One column per annotator (named after them); each cell a class name, or None, NaN or
        an empty string where that annotator did not label the example.
    classes : sequence of str
        The classes, in order.

    Returns
    -------
    ndarray of shape (n_examples, n_annotators), float64
        The index of each label in ``classes``; NaN where not labelled.

    Raises
    ------
    ValueError
        A label that is not one of ``classes``, naming the column, the row (from 1, in the
        order of ``labels``) and the value.
    """
    classes = [str(c) for c in classes]
    codes = np.full(labels.shape, np.nan)
    for position, column in enumerate(labels.columns):
        values = labels[column]
        missing = values.isna().to_numpy() | values.astype(str).str.strip().eq("").to_numpy()
        index = pd.Index(classes).get_indexer(values.astype(str).str.strip())
        unknown = (index < 0) & ~missing
        if unknown.any():
            rows = np.flatnonzero(unknown)
            shown = ", ".join(f"row {r + 1} {str(values.iloc[r])!r}" for r in rows[:_MAX_SHOWN])
            more = f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else ""
            raise ValueError(f"annotator column '{column}' has {len(rows)} label{'s' if len(rows) > 1 else ''} that "
                             f"{'are' if len(rows) > 1 else 'is'} not among the classes "
                             f"({_quote(classes)}): {shown}{more}.")
        codes[~missing, position] = index[~missing]
    return codes


def majority_vote(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """The class most annotators chose for each example.

    Ties go to the class chosen most often over all annotations (the annotators' prior), then
    to the first in class order: deterministic, unlike cleanlab's last resort (a random pick).

    Parameters
    ----------
    codes : ndarray of shape (n_examples, n_annotators)
        As :func:`annotation_codes` returns (NaN = not labelled).
    n_classes : int

    Returns
    -------
    ndarray of shape (n_examples,), int64
        The class index; −1 where nobody labelled the example.
    """
    counts = _label_counts(codes, n_classes)
    # Integer counts plus a fraction below 1 that only orders tied classes.
    scores = counts + _tie_break(counts)[None, :]
    return np.where(counts.sum(axis=1) > 0, scores.argmax(axis=1), -1).astype(np.int64)


def compute_annotators(
    labels: pd.DataFrame,
    classes: Sequence[str],
    *,
    heldout_probs: np.ndarray | None = None,
    ids: Sequence | None = None,
) -> AnnotatorReport:
    """Consensus labels, their quality and each annotator's quality.

    Parameters
    ----------
    labels : DataFrame of shape (n_examples, n_annotators)
        One column per annotator, as for :func:`annotation_codes` (missing = not labelled).
    classes : sequence of str
        The dataset's classes, in the order of the columns of ``heldout_probs``.
    heldout_probs : ndarray of shape (n_examples, n_classes), optional
        Out-of-fold predicted probabilities (the run's ``heldout_probs.npy``, rows as
        ``labels``). Without them the consensus is a majority vote.
    ids : sequence of shape (n_examples,), optional
        The examples' ids for the ``id`` column (default: the index of ``labels``).

    Returns
    -------
    AnnotatorReport

    Raises
    ------
    ValueError
        A label outside ``classes`` (naming column and row), no annotator column, or
        probabilities of the wrong shape.
    """
    if labels.shape[1] == 0:
        raise ValueError("No annotator columns: give at least one annotator's labels.")
    classes = tuple(str(c) for c in classes)
    codes = annotation_codes(labels, classes)
    n, n_classes = len(codes), len(classes)
    probs = _checked_probs(heldout_probs, n, n_classes)
    names = [str(c) for c in labels.columns]
    ids = labels.index.astype(str).to_numpy() if ids is None else np.asarray(ids, dtype=object).astype(str)
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} examples.")

    labelled = ~np.isnan(codes)
    rows = labelled.any(axis=1)
    active = labelled[rows].any(axis=0)
    sub = codes[rows][:, active]
    overlap = bool(active.sum() >= 2 and (labelled[rows].sum(axis=1) >= 2).any())
    if probs is None or not rows.any():
        consensus, consensus_quality, agreement, stats = _majority_consensus(sub, n_classes)
        method = MAJORITY_VOTE if rows.any() else NO_LABELS
    elif overlap:
        consensus, consensus_quality, agreement, stats = _crowdlab_consensus(sub, probs[rows])
        method = CROWDLAB
    else:
        consensus, consensus_quality, agreement, stats = _model_only_consensus(sub, probs[rows])
        method = MODEL_ONLY

    consensus_label = np.full(n, "", dtype=object)
    consensus_label[rows] = np.asarray(classes, dtype=object)[consensus]
    examples = pd.DataFrame({"id": ids, "consensus_label": consensus_label,
                             "consensus_quality": _spread(consensus_quality, rows),
                             "annotator_agreement": _spread(agreement, rows)})
    annotators = pd.DataFrame({
        "annotator": names,
        "quality": _spread(stats["quality"], active),
        "agreement_with_consensus": _spread(stats["agreement_with_consensus"], active),
        "n_labelled": labelled.sum(axis=0).astype(np.int64),
        "worst_class": _spread_classes(stats["worst_class"], active, classes),
    })
    annotators = annotators.sort_values(["quality", "agreement_with_consensus"], na_position="last",
                                        kind="stable").reset_index(drop=True)
    return AnnotatorReport(examples=examples, annotators=annotators, method=method,
                           note=_note(method, n_annotators=len(names), overlap=overlap, idle=int((~active).sum()),
                                      unlabelled=int((~rows).sum())))


def dataset_annotators(dataset, *, heldout_probs: np.ndarray | None = None) -> AnnotatorReport:
    """:func:`compute_annotators` on a dataset's annotator columns (``dataset.roles.annotator``).

    Parameters
    ----------
    dataset : analytics.datasets.Dataset
        Loaded with at least one annotator column.
    heldout_probs : ndarray of shape (n_examples, n_classes), optional
        The run's out-of-fold probabilities, rows in dataset order.

    Returns
    -------
    AnnotatorReport
        Rows in dataset order; ``examples`` holds the dataset's ids.
    """
    columns = list(dataset.roles.annotator)
    if not columns:
        raise ValueError(f"{dataset.name}: has no annotator columns; name them with the column role "
                         "'annotator' (ColumnRoles(annotator=(...)) or --annotator COL, once per annotator).")
    return compute_annotators(dataset.table[columns], dataset.classes, heldout_probs=heldout_probs,
                              ids=dataset.table["id"].to_numpy())


def review_annotations(current: pd.DataFrame, *, ids: Sequence, labels: Sequence) -> pd.DataFrame:
    """A review session's decisions as annotations: one column per reviewer.

    A ``keep`` is the example's current label, a ``relabel`` its new label; ``drop`` and
    ``flag`` say nothing about the class and count as not labelled (None). Adjudications are
    left out: they are the owner's final word, not one more opinion.

    Parameters
    ----------
    current : DataFrame
        The session's current decisions (:meth:`analytics.store.ReviewStore.current_decisions`):
        columns ``example_id``, ``reviewer``, ``decision``, ``new_label`` (and ``kind``).
    ids, labels : sequence of shape (n_examples,)
        The dataset's ids and current labels (a run's ``examples``), to resolve ``keep``.

    Returns
    -------
    DataFrame
        Indexed by ``example_id`` (the examples somebody decided, in first-decision order),
        one column per reviewer (sorted); each cell a class name or None.

    Raises
    ------
    ValueError
        Missing columns, or a decided example that is not among ``ids``.
    """
    missing = {"example_id", "reviewer", "decision", "new_label"} - set(current.columns)
    if missing:
        raise ValueError(f"current decisions lack the columns {sorted(missing)}; columns are {list(current.columns)}.")
    if "kind" in current.columns:
        current = current[current["kind"].eq("review")]
    label_of = pd.Series(np.asarray(labels, dtype=object), index=pd.Index(np.asarray(ids, dtype=object).astype(str)))
    example_ids = current["example_id"].astype(str)
    unknown = ~example_ids.isin(label_of.index)
    if unknown.any():
        shown = ", ".join(f"'{i}'" for i in example_ids[unknown].unique()[:_MAX_SHOWN])
        raise ValueError(f"{int(unknown.sum())} decisions are on examples that are not in this dataset's run "
                         f"(e.g. {shown}).")
    decision = current["decision"].astype(str).to_numpy()
    given = np.select([decision == "keep", decision == "relabel"],
                      [example_ids.map(label_of).to_numpy(dtype=object), current["new_label"].to_numpy(dtype=object)],
                      None)
    frame = pd.DataFrame({"example_id": example_ids.to_numpy(), "reviewer": current["reviewer"].astype(str).to_numpy(),
                          "label": given})
    if frame.duplicated(["example_id", "reviewer"]).any():
        raise ValueError("Several decisions by one reviewer on one example: pass the current decisions (the latest "
                         "per reviewer per example), not the history.")
    order = pd.unique(frame["example_id"])
    wide = frame.pivot(index="example_id", columns="reviewer", values="label").reindex(order)
    wide = wide[sorted(wide.columns)].astype(object)
    wide.columns.name = None
    return wide.where(wide.notna(), None)


def reviewer_quality(
    current: pd.DataFrame,
    *,
    ids: Sequence,
    labels: Sequence,
    classes: Sequence[str],
    heldout_probs: np.ndarray | None = None,
) -> AnnotatorReport:
    """Each reviewer of a session as an annotator: their quality, and the consensus per example.

    Parameters
    ----------
    current : DataFrame
        The session's current decisions (:meth:`analytics.store.ReviewStore.current_decisions`).
    ids, labels : sequence of shape (n_examples,)
        The run's ids and labels, in the row order of ``heldout_probs``.
    classes : sequence of str
        The dataset's classes (the columns of ``heldout_probs``).
    heldout_probs : ndarray of shape (n_examples, n_classes), optional
        The run's out-of-fold probabilities; without them, a majority vote.

    Returns
    -------
    AnnotatorReport
        Over the examples somebody decided (see :func:`review_annotations`); one annotator row
        per reviewer who decided anything.
    """
    annotations = review_annotations(current, ids=ids, labels=labels)
    probs = None
    if heldout_probs is not None:
        rows = pd.Index(np.asarray(ids, dtype=object).astype(str)).get_indexer(annotations.index)
        probs = np.asarray(heldout_probs)[rows]
    return compute_annotators(annotations, classes, heldout_probs=probs, ids=annotations.index)


# --------------------------------------------------------------------------- internals


def _label_counts(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_examples, n_classes) number of annotators who chose each class."""
    rows, annotators = np.nonzero(~np.isnan(codes))
    cells = rows * n_classes + codes[rows, annotators].astype(np.int64)
    return np.bincount(cells, minlength=len(codes) * n_classes).reshape(len(codes), n_classes).astype(float)


def _tie_break(counts: np.ndarray) -> np.ndarray:
    """Per class a value in (0, 1): larger for classes chosen more often overall, then earlier."""
    n_classes = counts.shape[1]
    order = np.lexsort((np.arange(n_classes), -counts.sum(axis=0)))
    rank = np.empty(n_classes)
    rank[order] = np.arange(n_classes)
    return (n_classes - rank) / (n_classes + 1)


def _checked_probs(probs, n: int, n_classes: int) -> np.ndarray | None:
    if probs is None:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, n_classes):
        raise ValueError(f"heldout_probs has shape {probs.shape}; expected ({n}, {n_classes}): one row per example, "
                         "one column per class.")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("heldout_probs holds negative or non-finite values.")
    return probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)  # float16/32 storage rounding


def _majority_consensus(codes: np.ndarray, n_classes: int):
    """Majority vote, quality by agreement: cleanlab's ``consensus_method="majority_vote"``,
    ``quality_method="agreement"``, vectorised (cleanlab counts each example's votes in Python,
    about 90 s at a million examples) and with :func:`majority_vote`'s deterministic ties."""
    consensus = majority_vote(codes, n_classes)
    counted = ~np.isnan(codes)
    agrees = codes == consensus[:, None]  # NaN never equals
    agreement = agrees.sum(axis=1) / counted.sum(axis=1)
    shared = counted & (counted.sum(axis=1) >= 2)[:, None]  # labels others could be compared with
    return consensus, agreement, agreement, {
        "quality": _column_means(agrees, shared),
        "agreement_with_consensus": _column_means(agrees, counted),
        "worst_class": _worst_classes(codes, consensus, agreement),
    }


def _crowdlab_consensus(codes: np.ndarray, probs: np.ndarray):
    """CROWDLAB through :func:`cleanlab.multiannotator.get_label_quality_multiannotator`."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "annotators do not agree on any example" and the like
        result = get_label_quality_multiannotator(codes, probs, consensus_method="best_quality",
                                                  quality_method="crowdlab", verbose=False)
    per_example = result["label_quality"]
    stats = result["annotator_stats"].sort_index()  # back to column order (cleanlab sorts by quality)
    return (per_example["consensus_label"].to_numpy(np.int64), per_example["consensus_quality_score"].to_numpy(float),
            per_example["annotator_agreement"].to_numpy(float),
            {"quality": stats["annotator_quality"].to_numpy(float),
             "agreement_with_consensus": stats["agreement_with_consensus"].to_numpy(float),
             "worst_class": stats["worst_class"].to_numpy(np.int64)})


def _model_only_consensus(codes: np.ndarray, probs: np.ndarray):
    """No example has two annotations: the consensus is the one label given, and the only judge
    of an annotator is the model (mean label-quality score of their labels)."""
    from cleanlab.rank import get_label_quality_scores

    consensus, _, agreement, stats = _majority_consensus(codes, probs.shape[1])
    counted = ~np.isnan(codes)
    stats["quality"] = np.array([
        np.mean(get_label_quality_scores(codes[counted[:, a], a].astype(np.int64), probs[counted[:, a]]))
        for a in range(codes.shape[1])])
    return consensus, get_label_quality_scores(consensus, probs), agreement, stats


def _column_means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of each column of ``values`` over its ``mask`` rows; NaN for an empty column."""
    counts = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (values & mask).sum(axis=0) / counts, np.nan)


def _worst_classes(codes: np.ndarray, consensus: np.ndarray, consensus_quality: np.ndarray) -> np.ndarray:
    """Per annotator, the class of their labels that least often matches the consensus; ties
    go to the class they used most, then the higher mean consensus quality (as cleanlab)."""
    worst = []
    for a in range(codes.shape[1]):
        given = ~np.isnan(codes[:, a])
        per_class = pd.DataFrame({"label": codes[given, a].astype(np.int64),
                                  "agrees": codes[given, a] == consensus[given],
                                  "quality": consensus_quality[given]}).groupby("label").agg(
            accuracy=("agrees", "mean"), count=("agrees", "size"), quality=("quality", "mean"))
        ranked = per_class.sort_values(["accuracy", "count", "quality"], ascending=[True, False, False],
                                       kind="stable")
        worst.append(int(ranked.index[0]) if len(ranked) else -1)
    return np.array(worst, dtype=np.int64)


def _spread(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` at the True positions of ``mask``, NaN elsewhere."""
    out = np.full(len(mask), np.nan)
    out[mask] = values
    return out


def _spread_classes(codes: np.ndarray, mask: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Class names of ``codes`` (−1 = unknown: "") at the True positions of ``mask``, "" elsewhere."""
    out = np.full(len(mask), "", dtype=object)
    out[mask] = [classes[c] if c >= 0 else "" for c in codes]
    return out


def _note(method: str, *, n_annotators: int, overlap: bool, idle: int, unlabelled: int) -> str:
    notes = {
        CROWDLAB: f"CROWDLAB over {n_annotators} annotators: each annotator's labels weighed against the others' "
                  "and the model's out-of-fold probabilities (cleanlab.multiannotator).",
        MAJORITY_VOTE: f"Majority vote over {n_annotators} annotators: the run has no out-of-fold probabilities, so "
                       "quality is agreement with the majority (ties go to the class chosen most often). Analyse "
                       "the dataset for CROWDLAB's model-weighted quality.",
        MODEL_ONLY: "No example was labelled by two annotators, so they cannot be compared with each other: each "
                    "annotator's quality is the model's label-quality score of their labels.",
        NO_LABELS: "Nobody has labelled an example yet.",
    }
    parts = [notes[method]]
    if method == NO_LABELS:
        return parts[0]
    if method == MAJORITY_VOTE and not overlap:
        parts.append("No example was labelled by two annotators, so their quality cannot be judged.")
    if idle:
        parts.append(f"{idle} annotator{'s' if idle > 1 else ''} labelled nothing.")
    if unlabelled:
        parts.append(f"{unlabelled:,} example{'s' if unlabelled > 1 else ''} had no annotation.")
    return " ".join(parts)


def _json_number(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value


def _quote(values, limit: int = 20) -> str:
    shown = [f"'{v}'" for v in values]
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")
