"""The sources of training dynamics: one module each, and what they hand the pipeline.

A source is one :class:`~analytics.analysis_config.DynamicsSource` entry of
:data:`~analytics.analysis_config.DYNAMICS_REGISTRY`. The entry holds the source's functions,
which live in its module of this package (``probe``, ``finetune``, ``checkpoints``, ``folder``):

``check(dataset, config, policy) -> CheckedSource``
    Run by :func:`analytics.pipeline.check_sources` before any stage, so a wrong folder or
    checkpoint fails in seconds. It reads nothing expensive (a dynamics folder is the exception:
    reading it is the check, and the result is kept in :attr:`CheckedSource.reference`). It raises
    one of :data:`SOURCE_ERRORS`, with a message safe to show a browser user; ``check_sources``
    turns it into a :class:`~analytics.pipeline.SourceError` with the same message.
``train(run, vectors, report) -> TrainedDynamics``
    The dynamics stage, when its cache entry is missing. ``vectors`` are the embeddings,
    ndarray of shape (n, d); ``report(fraction, message)`` is the stage's progress.
``params(config) -> dict``
    What the dynamics depend on, JSON-able: the dynamics stage's cache key and part of the run's
    key, so runs from different sources never share a run folder. Changing what it returns for a
    configuration makes that configuration's cached entries and run folders unreachable.
``manifest(run, scored) -> dict``
    The source's own keys of the manifest's ``dynamics`` entry (after the ones every source has:
    ``source``, ``seeds``, ``epochs``, ``early_epoch``, ``notes``, ``heldout``, ``heldout_from``).
    ``scored`` is the scores stage's result; ``scored.trained`` is what ``train`` returned (or
    its cache entry).

and, where the source has them:

``scheme(config, gold) -> str``
    How it fits its models when it has a choice (the probe: "independent" or "cross-fit"); part of
    the dynamics stage's key, the held-out stage's and the manifest.
``heldout(run, report) -> (probabilities or None, how)``
    Its own out-of-fold probabilities, ndarray of shape (n, classes), and a sentence for the
    manifest; None (and why, as ``"probe: <reason>"``) to fall back to the probe's. Without it,
    the held-out probabilities are always the probe's.

``run`` is what every stage of the pipeline reads (:class:`SourceRun`). The modules import
nothing heavy when imported (torch only inside the functions that train or load a model), so
:mod:`analytics.analysis_config` holds the functions themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from analytics.access import AccessError
from analytics.dynamics import DynamicsError, TrainingDynamics
from analytics.finetune_config import FinetuneError

if TYPE_CHECKING:
    from analytics.analysis_config import AnalysisConfig
    from analytics.datasets import Dataset
    from analytics.parallel import Executor
    from analytics.workspace import Workspace

__all__ = ["CheckedSource", "TrainedDynamics", "SourceRun", "SOURCE_ERRORS"]

#: What a source's ``check`` raises for a source that cannot be used.
SOURCE_ERRORS = (DynamicsError, FinetuneError, AccessError)


@dataclass(frozen=True, eq=False)
class CheckedSource:
    """A training-dynamics source that :func:`analytics.pipeline.check_sources` found usable.

    Attributes
    ----------
    source : str
        Its name in :data:`~analytics.analysis_config.DYNAMICS_REGISTRY`.
    folder : Path, optional
        (folder) The resolved folder of the ``dynamics_epoch_*.jsonl`` files.
    reference : TrainingDynamics, optional
        (folder) The dynamics read from it, aligned with the dataset (kept so the dynamics stage
        does not read the folder again).
    notes : tuple of str
        What the reader noticed (guids not in the dataset, gold labels that differ).
    """

    source: str
    folder: Path | None = None
    reference: TrainingDynamics | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class TrainedDynamics:
    """The dynamics stage's result.

    Attributes
    ----------
    dynamics : TrainingDynamics
    notes : tuple of str
        What the source noticed, for the manifest.
    heldout : ndarray of shape (n, classes), optional
        Out-of-fold probabilities from the same models (the probe's cross-fit scheme), for the
        held-out stage; None when they came from the cache or the source gives none.
    """

    dynamics: TrainingDynamics
    notes: tuple[str, ...] = ()
    heldout: np.ndarray | None = None


class SourceRun(Protocol):
    """What a source's ``train``, ``heldout`` and ``manifest`` read of the run (the pipeline's
    run inputs)."""

    dataset: Dataset
    config: AnalysisConfig  # resolved: the embedding is set
    workspace: Workspace
    executor: Executor
    checked: CheckedSource | None  # what the source's ``check`` returned

    @property
    def fingerprint(self) -> str: ...

    @property
    def scheme(self) -> str | None: ...
