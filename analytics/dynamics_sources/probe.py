"""Training dynamics from a probe on the embeddings: :func:`analytics.dynamics.train_probe`, or
under the cross-fit scheme :func:`analytics.dynamics.cross_fit_dynamics`, whose probes also give
the held-out probabilities. The default source (nothing given, nothing chosen)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from analytics.access import Policy
from analytics.datasets import Dataset
from analytics.dynamics import cross_fit_dynamics, heldout_folds, resolve_scheme, train_probe
from analytics.dynamics_sources import CheckedSource, SourceRun, TrainedDynamics

if TYPE_CHECKING:
    from analytics.analysis_config import AnalysisConfig

__all__ = ["SCHEME_NOTES", "check", "scheme", "train", "params", "manifest"]

#: The manifest's ``scheme_note``: how the probes were trained, per scheme.
SCHEME_NOTES = {
    "independent": "probe seeds each trained on every example; out-of-fold probabilities from "
                   "separate stratified K-fold probes",
    "cross-fit": "seeds + 1 probes, each trained on all but one stratified fold: each example's "
                 "seeds are the probes that trained on it, its out-of-fold probabilities come from "
                 "the one that held it out (used from 100,000 examples on; see "
                 "analytics.dynamics.cross_fit_dynamics)",
}


def check(dataset: Dataset, config: AnalysisConfig, policy: Policy) -> CheckedSource:
    """Nothing to check: the probe reads only the embeddings."""
    return CheckedSource("probe")


def scheme(config: AnalysisConfig, gold: np.ndarray) -> str:
    """"independent" or "cross-fit" (:func:`analytics.dynamics.resolve_scheme`)."""
    return resolve_scheme(config.probe, gold)


def train(run: SourceRun, vectors: np.ndarray, report) -> TrainedDynamics:
    """The probe's dynamics on ``vectors``; under the cross-fit scheme with its held-out
    probabilities."""
    labels, n_classes = run.dataset.label_codes, len(run.dataset.classes)
    if run.scheme == "cross-fit":
        # one set of probes gives both the dynamics and the held-out probabilities
        dynamics, heldout, _ = cross_fit_dynamics(vectors, labels, n_classes, run.config.probe, progress=report,
                                                  executor=run.executor)
        return TrainedDynamics(dynamics, heldout=heldout)
    return TrainedDynamics(train_probe(vectors, labels, n_classes, run.config.probe, progress=report,
                                       executor=run.executor))


def params(config: AnalysisConfig) -> dict:
    """The probe's settings, with the device blanked: where it runs does not change the dynamics."""
    return {"source": "probe", **asdict(config.probe), "device": None}


def manifest(run: SourceRun, scored) -> dict:
    """The probe's settings, its scheme, and the folds of its held-out probabilities."""
    probe, used = run.config.probe, run.scheme
    return {"probe": asdict(probe), "scheme": used, "folds": heldout_folds(probe, used, scored.trained.dynamics.gold),
            "scheme_note": SCHEME_NOTES[used]}
