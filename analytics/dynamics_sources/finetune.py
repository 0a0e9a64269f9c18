"""Training dynamics from fine-tuning the model on the examples (:mod:`analytics.finetune`), and
its own held-out probabilities by cross-fitting the same fine-tuning when it fits the budget.
Its settings are ``AnalysisConfig.finetune``; torch is imported only when fine-tuning runs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analytics.access import Policy
from analytics.datasets import Dataset
from analytics.dynamics_sources import CheckedSource, SourceRun, TrainedDynamics
from analytics.finetune_config import check_finetune

if TYPE_CHECKING:
    from analytics.analysis_config import AnalysisConfig
    from analytics.workspace import Workspace

__all__ = ["check", "train", "heldout", "params", "manifest", "cache_dir"]


def check(dataset: Dataset, config: AnalysisConfig, policy: Policy) -> CheckedSource:
    """:func:`analytics.finetune_config.check_finetune`: the model folder, the settings, the data."""
    check_finetune(dataset, config.finetune, policy=policy)
    return CheckedSource("finetune")


def train(run: SourceRun, vectors: np.ndarray, report) -> TrainedDynamics:
    """The fine-tuning's dynamics (it never sees ``vectors``), resuming from its per-epoch cache."""
    from analytics.finetune import finetune_dynamics  # torch: only when fine-tuning runs

    return TrainedDynamics(finetune_dynamics(run.dataset, run.config.finetune, progress=report,
                                             cache_dir=cache_dir(run.workspace, run.fingerprint)))


def heldout(run: SourceRun, report) -> tuple[np.ndarray | None, str]:
    """:func:`analytics.finetune.finetune_heldout`: cross-fitting the same fine-tuning when asked,
    or when its time, estimated from the epochs just trained, fits the budget; else None and why."""
    from analytics.finetune import finetune_heldout  # torch: only when fine-tuning runs

    return finetune_heldout(run.dataset, run.config.finetune, progress=report,
                            cache_dir=cache_dir(run.workspace, run.fingerprint))


def params(config: AnalysisConfig) -> dict:
    """:meth:`analytics.finetune_config.FinetuneConfig.params`: the options, not the device."""
    return {"source": "finetune", **config.finetune.params()}


def manifest(run: SourceRun, scored) -> dict:
    """The fine-tuning settings, less the device."""
    return {"finetune": {k: v for k, v in asdict(run.config.finetune).items() if k != "device"}}


def cache_dir(workspace: Workspace, fingerprint: str) -> Path:
    """Where fine-tuning keeps its per-epoch cache, so a stopped run resumes from its last
    finished epoch (:mod:`analytics.finetune` keys each training run inside it by the dataset,
    the options and the rows it trains on)."""
    return Path(workspace.root) / "finetune" / fingerprint
