"""Training dynamics from the user's per-epoch checkpoints: each checkpoint's logits on the
dataset (:func:`analytics.dynamics.checkpoint_dynamics` over
:func:`analytics.embeddings.checkpoint_outputs`). torch is imported only when a checkpoint is
loaded or hashed."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analytics.access import AccessError, Policy, check_architecture, resolve_data_path
from analytics.datasets import Dataset
from analytics.dynamics import checkpoint_dynamics
from analytics.dynamics_sources import CheckedSource, SourceRun, TrainedDynamics
from analytics.embeddings import checkpoint_outputs

if TYPE_CHECKING:
    from analytics.analysis_config import AnalysisConfig

__all__ = ["check", "train", "params", "manifest"]


def check(dataset: Dataset, config: AnalysisConfig, policy: Policy) -> CheckedSource:
    """Every path exists as a regular file or folder inside the data roots, and the architecture
    (for state dicts) is one the operator's rules allow (:func:`analytics.access.check_architecture`);
    nothing is loaded yet.

    Raises
    ------
    AccessError
        Naming the checkpoint by its place ("Checkpoint 2 of 3: …"), or the architecture.
    """
    for epoch, path in enumerate(config.checkpoints):
        try:
            resolve_data_path(path, policy, what="checkpoint")
        except AccessError as exc:
            raise AccessError(f"Checkpoint {epoch + 1} of {len(config.checkpoints)}: {exc}") from None
    if config.architecture:
        check_architecture(config.architecture, policy, trust=config.trust)
    return CheckedSource("checkpoints")


def train(run: SourceRun, vectors: np.ndarray, report) -> TrainedDynamics:
    """Each checkpoint's logits on the dataset (one unit of ``run.executor`` each), and the
    notes on which checkpoints gave no input gradients for VoG."""
    dataset, config = run.dataset, run.config
    notes: list[str] = []  # checkpoint_dynamics says here which checkpoints lack gradients
    dynamics = checkpoint_dynamics(
        config.checkpoints, dataset.label_codes, progress=report, executor=run.executor, notes=notes,
        run_one=functools.partial(checkpoint_outputs, dataset, architecture=config.architecture,
                                  trust=config.trust, device=config.device, output="logits"))
    return TrainedDynamics(dynamics, tuple(notes))


def params(config: AnalysisConfig) -> dict:
    """A digest of every checkpoint's content, in order, and the architecture."""
    from analytics.checkpoints import checkpoint_fingerprint  # torch: only with checkpoints

    # v2: checkpoint dynamics carry VoG; entries cached before it are computed again
    return {"source": "checkpoints", "checkpoints": [checkpoint_fingerprint(c) for c in config.checkpoints],
            "architecture": config.architecture, "v": 2}


def manifest(run: SourceRun, scored) -> dict:
    """The checkpoints' file names (never a server path) and the architecture."""
    config = run.config
    return {"checkpoints": [Path(path).name for path in config.checkpoints], "architecture": config.architecture}
