"""Training dynamics read from a folder in the allenai/cartography format
(``dynamics_epoch_{e}.jsonl``; :func:`analytics.dynamics.read_reference_dynamics`), given as that
folder or as the model output folder that holds ``training_dynamics/``. Its dynamics, manifest
and cache entries say ``source: "reference"``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analytics.access import Policy
from analytics.datasets import Dataset
from analytics.dynamics import DynamicsError, TrainingDynamics, find_dynamics_folder, read_reference_dynamics
from analytics.dynamics_sources import CheckedSource, SourceRun, TrainedDynamics

if TYPE_CHECKING:
    from analytics.analysis_config import AnalysisConfig

__all__ = ["check", "train", "params", "manifest"]


def check(dataset: Dataset, config: AnalysisConfig, policy: Policy) -> CheckedSource:
    """Find the folder (either layout) and read it in full: every epoch from 0 without gaps,
    every example's guid present, every line well formed, every gold class index within the
    dataset's labels. The dynamics read are kept for :func:`train`."""
    folder = find_dynamics_folder(config.dynamics_dir, policy=policy)
    dynamics, notes = read_reference_dynamics(folder, dataset.table["id"].tolist(), n_classes=len(dataset.classes),
                                              gold=dataset.label_codes, policy=policy, classes=list(dataset.classes))
    return CheckedSource("folder", folder=folder, reference=dynamics, notes=tuple(notes))


def train(run: SourceRun, vectors: np.ndarray, report) -> TrainedDynamics:
    """The dynamics :func:`check` read, with the early epoch at the end of the first fifth."""
    read = run.checked.reference
    return TrainedDynamics(TrainingDynamics(
        logits=read.logits, gold=read.gold, source="reference",
        early_epoch=min(read.n_epochs - 1, max(0, read.n_epochs // 5))), run.checked.notes)


def params(config: AnalysisConfig) -> dict:
    """The folder of the epoch files and the name, size and modification time of what it holds,
    so an edited or replaced file makes a new key."""
    folder = _epoch_folder(config.dynamics_dir)
    return {"source": "reference", "dir": str(folder), "stamp": _folder_stamp(folder)}


def manifest(run: SourceRun, scored) -> dict:
    """The folder read (the resolved folder of epoch files once checked)."""
    checked = run.checked
    return {"folder": str(checked.folder) if checked is not None and checked.folder else run.config.dynamics_dir}


def _epoch_folder(typed: str) -> Path:
    """The folder of the epoch files for either layout, or the typed folder when none is found
    (:func:`check` then says what is wrong)."""
    try:
        return find_dynamics_folder(typed)
    except DynamicsError:
        return Path(typed).expanduser().resolve()


def _folder_stamp(folder: Path) -> list:
    try:
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
    except OSError:
        return []
