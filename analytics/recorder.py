"""Record training dynamics from the user's own training, in the Dataset Cartography format.

:class:`DynamicsRecorder` keeps the logits of every example in the training pass of each epoch
(as the reference code, allenai/cartography, records them) and writes them as
``out_dir/training_dynamics/dynamics_epoch_{e}.jsonl``, one JSON object per line
``{"guid": ..., "logits_epoch_{e}": [K floats], "gold": <class index>}``, with the label names in
``out_dir/training_dynamics/classes.json``. ``cartographer analyze DATASET --dynamics out_dir``
and the app read that folder (:func:`analytics.dynamics.read_reference_dynamics`).

Callbacks that record the same way, each in an optional extra:

- ``HFDynamicsCallback``, a ``transformers.TrainerCallback`` (``pip install
  'data-cartographer[hf]'``; see :mod:`analytics.integrations.hf`);
- ``LightningDynamicsCallback``, a Lightning ``Callback`` (``pip install
  'data-cartographer[lightning]'``; see :mod:`analytics.integrations.lightning`).

Importing this module imports neither framework, nor torch.
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from analytics.access import Policy
from analytics.dynamics import (
    CLASSES_FILE,
    DYNAMICS_SUBFOLDER,
    DynamicsError,
    dynamics_epoch_files,
    read_dynamics_classes,
    write_dynamics_epoch,
)
from analytics.workspace import atomic_write_text

__all__ = ["DynamicsRecorder", "HFDynamicsCallback", "LightningDynamicsCallback"]

# name -> (module, extra): the callbacks load their framework only when asked for.
_CALLBACKS = {
    "HFDynamicsCallback": ("analytics.integrations.hf", "hf", "transformers and accelerate"),
    "LightningDynamicsCallback": ("analytics.integrations.lightning", "lightning", "lightning"),
}


def __getattr__(name: str) -> Any:
    if name not in _CALLBACKS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra, packages = _CALLBACKS[name]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"{name} needs {packages}, which are not installed ({exc}). Install the extra: "
                          f"pip install 'data-cartographer[{extra}]' (or, in a checkout, "
                          f"pip install -e '.[{extra}]').") from exc


class DynamicsRecorder:
    """Collect each example's logits in the training pass of every epoch and write them in the
    reference format.

    Call :meth:`log` once per training batch with the logits of that batch's forward pass (the
    one the loss is computed from, before the optimiser step), and :meth:`end_epoch` after the
    last batch of each epoch::

        recorder = DynamicsRecorder("runs/my-model", classes=["negative", "positive"])
        for epoch in range(epochs):
            for ids, x, y in loader:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                recorder.log(ids, logits, y)
                ...  # backward, step
            recorder.end_epoch()

    Parameters
    ----------
    out_dir : str or Path
        The model output folder; the files go to ``out_dir/training_dynamics/``.
    classes : sequence of str, optional
        The label names in index order (logit column j and gold index j are ``classes[j]``);
        saved as ``training_dynamics/classes.json`` and used when the dynamics are read to map
        the columns into the dataset's class order. Without it, index j is taken as the j-th of
        the dataset's label names sorted (the order the app and CLI give classes).
    start_epoch : int, optional
        The number of the first epoch this recorder writes. By default the epoch after the last
        ``dynamics_epoch_{e}.jsonl`` already in the folder (0 for a new folder), so a training
        run resumed after epoch e continues at e + 1.

    Raises
    ------
    FileExistsError
        ``start_epoch``'s file exists already: an epoch file is never overwritten.
    DynamicsError
        ``classes`` are not distinct names, or differ from the ``classes.json`` of epochs
        recorded earlier in the folder (or those epochs were recorded without names).

    Notes
    -----
    Every example must be logged exactly once per epoch (no ``drop_last``, no sampling with
    replacement), and epochs must be whole: the reader refuses a dataset id missing from an
    epoch. ``end_epoch`` warns when an epoch's ids differ from the previous epoch's. A binary
    model with a single output ``z`` (a sigmoid) is logged as the two logits ``[0, z]``, whose
    softmax is ``[1 - sigmoid(z), sigmoid(z)]``.
    """

    def __init__(self, out_dir: str | Path, classes: Sequence[str] | None = None, *,
                 start_epoch: int | None = None) -> None:
        self.folder = Path(out_dir).expanduser() / DYNAMICS_SUBFOLDER
        existing = dynamics_epoch_files(self.folder) if self.folder.is_dir() else {}
        self.classes = self._agree_classes(classes, existing)
        if start_epoch is not None and (int(start_epoch) != start_epoch or start_epoch < 0):
            raise ValueError(f"start_epoch must be a whole number >= 0, not {start_epoch!r}.")
        self._epoch = int(start_epoch) if start_epoch is not None else max(existing, default=-1) + 1
        self._refuse_existing(self._epoch)
        self._width = len(self.classes) if self.classes is not None else _width_of(existing)
        self._previous_ids: set[str] | None = None
        self._clear()

    # ------------------------------------------------------------------ public

    @property
    def epoch(self) -> int:
        """The epoch the logged batches belong to (the number :meth:`end_epoch` writes)."""
        return self._epoch

    @property
    def n_logged(self) -> int:
        """How many examples were logged in the current epoch so far."""
        return len(self._seen)

    def begin_epoch(self, epoch: int) -> None:
        """Record the next batches as epoch ``epoch`` (to follow a trainer's own epoch count).

        Raises
        ------
        DynamicsError
            Batches of the current epoch were logged and not written yet.
        FileExistsError
            ``epoch``'s file exists already.
        """
        if int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a whole number >= 0, not {epoch!r}.")
        if self._seen and epoch != self._epoch:
            raise DynamicsError(f"{self.n_logged} examples were logged in epoch {self._epoch} but not written; "
                                f"call end_epoch() before starting epoch {epoch}.")
        self._refuse_existing(epoch)
        self._epoch = int(epoch)

    def log(self, ids, logits, gold) -> None:
        """Keep one batch's logits.

        Parameters
        ----------
        ids : sequence of length B
            The examples' ids as the dataset has them (strings, or numbers that are written as
            strings); also a numpy array or torch tensor.
        logits : ndarray or torch tensor of shape (B, n_classes)
            The outputs of the training forward pass; detached, moved to the CPU and stored as
            float32.
        gold : ndarray or torch tensor of shape (B,), int
            The class index each example was trained on.

        Raises
        ------
        DynamicsError
            Shapes that do not match, a logit count that differs from earlier batches (or from
            ``classes``), a gold index outside the classes, or an id already logged in this
            epoch. Nothing of a refused batch is kept.
        """
        names = _as_ids(ids)
        values = _as_array(logits, np.float32)
        labels = _as_array(gold, None)
        if values.ndim != 2:
            raise DynamicsError(f"logits must have shape (batch, n_classes); got {values.shape}.")
        if labels.ndim != 1 or not (len(names) == len(values) == len(labels)):
            raise DynamicsError(f"ids ({len(names)}), logits {values.shape} and gold {labels.shape} must describe "
                                "the same examples: one id, one row of logits and one class index each.")
        if labels.size and not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise DynamicsError(f"gold must hold class indices (integers); got {labels.dtype} values.")
        width = self._width if self._width is not None else values.shape[1]
        if values.shape[1] != width:
            expected = (f"one per class of {list(self.classes)[:10]}" if self.classes is not None
                        else "as in the earlier batches")
            raise DynamicsError(f"this batch has {values.shape[1]} logits per example; expected {width}, {expected}. "
                                "Log one logit per class (a single sigmoid output z as [0, z]).")
        labels = labels.astype(np.int64)
        outside = np.flatnonzero((labels < 0) | (labels >= width))
        if outside.size:
            at = int(outside[0])
            named = f"classes {list(self.classes)[:10]}" if self.classes is not None else f"{width} logits"
            raise DynamicsError(f"gold index {int(labels[at])} of example {names[at]!r} is outside the {named} "
                                f"(indices 0..{width - 1}).")
        if len(set(names)) != len(names) or not self._seen.isdisjoint(names):
            repeated = next(name for position, name in enumerate(names)
                            if name in self._seen or name in names[:position])
            raise DynamicsError(f"id {repeated!r} was logged twice in epoch {self._epoch}; each example must be "
                                "logged once per epoch (are the ids unique, and is the sampler without replacement?).")
        self._width = width
        self._seen.update(names)
        self._ids.extend(names)
        self._logits.append(values)
        self._gold.append(labels)

    def end_epoch(self) -> Path:
        """Write the epoch's ``dynamics_epoch_{e}.jsonl`` atomically and start the next epoch.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        DynamicsError
            Nothing was logged in this epoch.
        FileExistsError
            The epoch's file appeared meanwhile (it is never overwritten).
        """
        if not self._ids:
            raise DynamicsError(f"nothing was logged in epoch {self._epoch}; call log() for each training batch "
                                "before end_epoch().")
        self._refuse_existing(self._epoch)
        path = write_dynamics_epoch(self.folder, self._epoch, self._ids, np.concatenate(self._logits),
                                    np.concatenate(self._gold))
        ids = self._seen
        if self._previous_ids is not None and ids != self._previous_ids:
            warnings.warn(f"{path.name}: {len(ids - self._previous_ids)} ids were not in the previous epoch and "
                          f"{len(self._previous_ids - ids)} ids of the previous epoch are missing; every example "
                          "must be logged in every epoch for the dynamics to be read.", stacklevel=2)
        self._previous_ids = ids
        self._epoch += 1
        self._clear()
        return path

    # ------------------------------------------------------------------ internals

    def _clear(self) -> None:
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._logits: list[np.ndarray] = []
        self._gold: list[np.ndarray] = []

    def _refuse_existing(self, epoch: int) -> None:
        path = self.folder / f"dynamics_epoch_{epoch}.jsonl"
        if path.exists():
            raise FileExistsError(f"{path}: exists already and is never overwritten. Record into a new folder, "
                                  "remove the old epoch files, or continue after them (start_epoch).")

    def _agree_classes(self, classes: Sequence[str] | None, existing: dict[int, Path]) -> tuple[str, ...] | None:
        """The class names to record under, checked against (or written as) ``classes.json``."""
        saved = read_dynamics_classes(self.folder, policy=Policy()) if self.folder.is_dir() else None
        if classes is None:
            return saved  # continuing a folder recorded with names keeps them
        names = tuple(str(name) for name in classes)
        if len(names) < 2 or len(set(names)) != len(names):
            raise DynamicsError(f"classes must be at least two distinct label names in index order; got {list(names)}.")
        if saved is not None and saved != names:
            raise DynamicsError(f"{self.folder / CLASSES_FILE}: the epochs already recorded here use the classes "
                                f"{list(saved)}, not {list(names)}; record into a new folder.")
        if saved is None and existing:
            raise DynamicsError(f"{self.folder}: epochs {sorted(existing)} were recorded without class names; "
                                "continue them with classes=None, or record into a new folder.")
        if saved is None:
            atomic_write_text(self.folder / CLASSES_FILE, json.dumps(list(names)) + "\n")
        return names


def _width_of(existing: dict[int, Path]) -> int | None:
    """The logit count of the last epoch recorded in the folder (its first line), if any."""
    if not existing:
        return None
    epoch = max(existing)
    path = existing[epoch]
    try:
        with path.open(encoding="utf-8") as handle:
            return len(json.loads(handle.readline())[f"logits_epoch_{epoch}"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DynamicsError(f"{path}: line 1 is not a dynamics record ({type(exc).__name__}: {exc}); "
                            "continue in a folder whose epoch files are intact.") from None


def _as_array(values, dtype) -> np.ndarray:
    """A numpy copy of a numpy array, torch tensor (detached, on the CPU) or sequence."""
    if hasattr(values, "detach"):  # a torch tensor; torch itself stays an optional import
        values = values.detach().cpu()
        if dtype is not None:
            values = values.float()
        values = values.numpy()
    return np.array(values, dtype=dtype)


def _as_ids(ids) -> list[str]:
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().tolist()
    elif isinstance(ids, np.ndarray):
        ids = ids.tolist()
    elif isinstance(ids, (str, bytes)):
        raise DynamicsError("ids must be a sequence of ids, one per example, not a single string.")
    return [str(name) for name in ids]
