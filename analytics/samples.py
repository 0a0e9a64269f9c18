"""The small real datasets bundled in ``sample_data/`` (sources and licences in its README)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analytics.datasets import ColumnRoles

__all__ = ["Sample", "SAMPLES", "SAMPLE_DIR", "sample_by_key"]

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


@dataclass(frozen=True)
class Sample:
    """A bundled dataset: where it is, how to read it, and what it is."""

    key: str
    title: str
    path: Path
    roles: ColumnRoles
    description: str


SAMPLES: tuple[Sample, ...] = (
    Sample(
        key="debian-packages",
        title="Debian package descriptions (text)",
        path=SAMPLE_DIR / "debian_packages.csv",
        roles=ColumnRoles(),
        description="1,549 Debian 12 package descriptions labelled by archive section "
                    "(games, science, sound, graphics, mail, database, editors, web).",
    ),
    Sample(
        key="digits",
        title="Handwritten digits (images)",
        path=SAMPLE_DIR / "digits",
        roles=ColumnRoles(),
        description="1,797 8×8 greyscale handwritten digits (UCI optical recognition of "
                    "handwritten digits, as shipped with scikit-learn), one folder per digit.",
    ),
    Sample(
        key="breast-cancer",
        title="Breast cancer diagnosis (tabular)",
        path=SAMPLE_DIR / "breast_cancer.csv",
        roles=ColumnRoles(label="diagnosis"),
        description="569 breast-mass biopsies described by 30 numeric cell-nucleus features, "
                    "labelled malignant or benign (Wisconsin Diagnostic Breast Cancer).",
    ),
)


def sample_by_key(key: str) -> Sample:
    for sample in SAMPLES:
        if sample.key == key:
            return sample
    raise KeyError(f"No bundled sample '{key}'; known: {', '.join(s.key for s in SAMPLES)}")
