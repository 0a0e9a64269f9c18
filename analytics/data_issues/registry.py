"""The issue types, declared once: name, meaning, how to select the affected examples, reference.

Every entry of ``issues.json`` and every row of the Issues page comes from this table; the
per-example column names are derived from it (:func:`issue_columns`), never restated.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IssueType", "ISSUE_TYPES", "IMAGE_PROPERTIES", "DUPLICATE_COLUMNS", "issue_columns", "severity"]

#: The image properties of CleanVision, in its order. Each has ``<name>_score`` (lower = more of
#: an issue, as in CleanVision) and ``is_<name>`` (the flag).
IMAGE_PROPERTIES = ("dark", "light", "blurry", "low_information", "odd_size", "odd_aspect_ratio", "grayscale")

#: Per-example columns of the duplicate and leak checks.
DUPLICATE_COLUMNS = ("near_duplicate", "duplicate_set", "duplicate_kind", "duplicate_label_conflict", "split_leak")


@dataclass(frozen=True)
class IssueType:
    """One kind of data issue.

    Attributes
    ----------
    name : str
        Key in ``issues.json`` (``summary["issues"][name]``).
    meaning : str
        One sentence for the user: what it is and why it matters.
    level : {"examples", "dataset"}
        "examples": ``count`` is the number of affected examples; "dataset": ``count`` is the
        number of columns or properties found (the issue belongs to the dataset, not to rows).
    flag_column : str or None
        The bool column of :attr:`DataIssues.columns` that selects the affected examples.
    serious : bool
        Any occurrence matters (a leak, a conflicting label): severity is raised one step.
    reference : str
    """

    name: str
    meaning: str
    level: str = "examples"
    flag_column: str | None = None
    serious: bool = False
    reference: str = ""


_CLEANVISION = "CleanVision image property (cleanlab/cleanvision), thresholds as Datalab's defaults"
_PROPERTY_MEANINGS = {
    "dark": "Images much darker than usual (99th-percentile brightness below 0.32): underexposed or blank.",
    "light": "Images much lighter than usual (5th-percentile brightness above 0.95): overexposed or washed out.",
    "blurry": "Images with few sharp edges: out of focus or upscaled from a small original.",
    "low_information": "Images with very low pixel entropy: nearly uniform, they carry little to learn from.",
    "odd_size": "Images whose size lies far outside the dataset's usual range (3 interquartile ranges).",
    "odd_aspect_ratio": "Images with an extreme width-to-height ratio: stretched, cropped or a strip.",
    "grayscale": "Images without colour in a dataset that otherwise has it.",
}

ISSUE_TYPES: dict[str, IssueType] = {t.name: t for t in (
    IssueType("near_duplicate",
              "Exact or near copies of another example: each set counts several times in training and "
              "in evaluation.",
              flag_column="near_duplicate",
              reference="cleanlab Datalab near_duplicate; exact content hashing as FiftyOne Brain"),
    IssueType("duplicate_label_conflict",
              "Copies that carry different labels: at least one of the labels is wrong, or the task "
              "is ambiguous for them.",
              flag_column="duplicate_label_conflict", serious=True),
    IssueType("split_leak",
              "Examples with a copy in another split: the held-out score partly measures memory, "
              "not generalisation.",
              flag_column="split_leak", serious=True,
              reference="FiftyOne Brain leaky splits"),
    IssueType("non_iid",
              "The row order carries information (drift, sorting or batches): neighbours in "
              "feature space sit close together in the file.",
              serious=True, reference="cleanlab Datalab non_iid (permutation test on index distances)"),
    IssueType("class_imbalance",
              "The rarest class has under a tenth of its fair share of examples: models tend to "
              "ignore it and accuracy hides it.",
              reference="cleanlab Datalab class_imbalance"),
    IssueType("null",
              "Examples whose every feature or metadata value is missing.",
              reference="cleanlab Datalab null"),
    IssueType("null_or_constant_column",
              "Columns that are empty or hold one value: they carry no information.",
              level="dataset"),
    IssueType("identifier_column",
              "Identifier-like columns that predict the label beyond the majority baseline: the "
              "label leaks through how rows were numbered or named.",
              level="dataset", serious=True,
              reference="cleanlab Datalab identifier_column, tested for leaks by cross-validation"),
    IssueType("spurious_cue",
              "Metadata, text length or image properties that alone predict the label: a model "
              "may learn the shortcut instead of the content.",
              level="dataset", serious=True,
              reference="cleanlab Datalab spurious_correlations"),
    *(IssueType(name, _PROPERTY_MEANINGS[name], flag_column=f"is_{name}", reference=_CLEANVISION)
      for name in IMAGE_PROPERTIES),
)}


def issue_columns(*, images: bool) -> tuple[str, ...]:
    """Names of the per-example columns, in order (image property columns only for images)."""
    names = (*DUPLICATE_COLUMNS, "non_iid_score")
    if images:
        names += tuple(c for p in IMAGE_PROPERTIES for c in (f"{p}_score", f"is_{p}"))
    return names


def severity(issue: IssueType, count: int, n_examples: int) -> str:
    """"none", "low", "medium" or "high".

    Per-example issues: none when nothing is affected; low under 1% of the examples, medium
    under 10%, high from 10%; a serious issue (leaks, conflicting labels, a non-IID order)
    goes one step up. Dataset-level issues: none when nothing is found, high when serious,
    else medium.
    """
    if count <= 0:
        return "none"
    levels = ("low", "medium", "high")
    if issue.level == "dataset":
        return "high" if issue.serious else "medium"
    share = count / max(n_examples, 1)
    step = 0 if share < 0.01 else 1 if share < 0.10 else 2
    return levels[min(step + issue.serious, 2)]
