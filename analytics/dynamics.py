"""Training dynamics: every example's logits at every epoch, from one of three sources.

1. **Imported** in the format of the Dataset Cartography reference implementation
   (allenai/cartography): a folder of ``dynamics_epoch_{e}.jsonl`` files, e = 0..E-1, one JSON
   object per line ``{"guid": ..., "logits_epoch_{e}": [K floats], "gold": <class index>}``,
   given as that folder or as the model output folder holding it as ``training_dynamics/``;
   an optional ``classes.json`` beside the epoch files names the classes in logit order
   (:mod:`analytics.recorder` writes all of it from the user's own training).
2. **Checkpoints**, one per epoch: each checkpoint's logits on the dataset.
3. **A probe** trained on the embeddings (a linear or one-hidden-layer head), recording each
   training example's logits in the training-mode forward pass of every epoch, as the
   reference code does, over several seeds; and out-of-fold probabilities by K-fold
   cross-fitting for the scores that need held-out predictions.

All three give a :class:`TrainingDynamics` with logits of shape (seeds, epochs, n, classes).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import numpy as np

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.workspace import atomic_write_text

__all__ = [
    "DynamicsError",
    "TrainingDynamics",
    "ProbeConfig",
    "CLASSES_FILE",
    "DYNAMICS_SUBFOLDER",
    "dynamics_epoch_files",
    "find_dynamics_folder",
    "read_dynamics_classes",
    "read_reference_dynamics",
    "write_dynamics_epoch",
    "write_reference_dynamics",
    "checkpoint_dynamics",
    "train_probe",
    "cross_fit_probabilities",
    "cross_fit_dynamics",
    "fold_count",
    "heldout_folds",
    "fit_probe_run",
    "resolve_scheme",
    "ProbeStack",
    "fit_probes",
    "predict_probes",
]

Progress = Callable[[float, str], None]
_EPOCH_FILE = re.compile(r"dynamics_epoch_(\d+)\.jsonl$")


class DynamicsError(ValueError):
    """Dynamics cannot be read or computed; the message names the file, epoch or ids at fault."""


@dataclass(frozen=True, eq=False)
class TrainingDynamics:
    """Attributes
    ----------
    logits : ndarray of shape (n_seeds, n_epochs, n_examples, n_classes), float32
    gold : ndarray of shape (n_examples,), int64 — the label index each run trained on
    source : {"reference", "checkpoints", "probe", "finetune"}
    hidden_norms : ndarray of shape (n_seeds, n_examples), optional
        Squared L2 norm of the input to the last layer at ``early_epoch`` (for GraNd).
    early_epoch : int
        The epoch taken as "early in training" for EL2N and GraNd.
    vog : ndarray of shape (n_examples,), optional
        Raw Variance of Gradients (before the within-class normalisation; see
        :mod:`analytics.vog`), averaged over seeds.
    """

    logits: np.ndarray
    gold: np.ndarray
    source: str
    hidden_norms: np.ndarray | None = None
    early_epoch: int = 0
    vog: np.ndarray | None = None

    @property
    def n_seeds(self) -> int:
        return self.logits.shape[0]

    @property
    def n_epochs(self) -> int:
        return self.logits.shape[1]


# --------------------------------------------------------------------------- reference format

#: The folder that holds the epoch files inside a model output folder (allenai/cartography layout).
DYNAMICS_SUBFOLDER = "training_dynamics"
#: Beside the epoch files: the label names in the order of the logit columns and gold indices.
CLASSES_FILE = "classes.json"


def dynamics_epoch_files(folder: str | Path) -> dict[int, Path]:
    """The ``dynamics_epoch_{e}.jsonl`` entries of ``folder`` by epoch (empty when there are none)."""
    return {int(m.group(1)): p for p in Path(folder).iterdir() if (m := _EPOCH_FILE.fullmatch(p.name))}


def find_dynamics_folder(path: str | Path, *, policy: Policy | None = None) -> Path:
    """The folder of ``dynamics_epoch_{e}.jsonl`` files that ``path`` names.

    ``path`` is either that folder itself or a model output folder holding it as
    ``training_dynamics/`` (the layout allenai/cartography writes). Both are checked against the
    operator's rules (``policy``: data roots; by default :meth:`Policy.from_env`), so this is
    cheap enough to call before any expensive stage.

    Returns
    -------
    Path
        The resolved folder of epoch files; read this one.

    Raises
    ------
    DynamicsError
        The path is refused, missing or not a folder, or neither it nor its ``training_dynamics/``
        holds epoch files. The message names the path as typed, never a server path outside the
        data roots.
    """
    typed = os.fspath(path)
    inner_typed = os.path.join(typed, DYNAMICS_SUBFOLDER)
    what = "folder of training dynamics"
    try:
        policy = policy or Policy.from_env()
        folder = resolve_data_path(typed, policy, what=what, allow_file=False)
        if dynamics_epoch_files(folder):
            return folder
        if os.path.lexists(folder / DYNAMICS_SUBFOLDER):  # a link is checked against the roots first
            inner = resolve_data_path(inner_typed, policy, what=what, allow_file=False)
            if dynamics_epoch_files(inner):
                return inner
    except AccessError as exc:
        raise DynamicsError(str(exc)) from None
    except OSError as exc:  # a folder that cannot be listed
        raise DynamicsError(f"{typed}: cannot be read as a {what} ({type(exc).__name__}).") from None
    raise DynamicsError(f"{typed}: neither {typed} nor {inner_typed} holds dynamics_epoch_*.jsonl files. "
                        "Give the folder of the epoch files (dynamics_epoch_0.jsonl, dynamics_epoch_1.jsonl, "
                        "...) or the model output folder that holds training_dynamics/.")


def read_dynamics_classes(folder: Path, *, policy: Policy | None = None) -> tuple[str, ...] | None:
    """The label names of ``folder``'s ``classes.json`` (a JSON list, in logit-column order), or
    None when it has none.

    Raises
    ------
    DynamicsError
        The file is refused by the operator's rules, unreadable, not a list of distinct names.
    """
    path = Path(folder) / CLASSES_FILE
    if not os.path.lexists(path):
        return None
    try:
        path = resolve_data_path(path, policy or Policy.from_env(), what="classes file", allow_dir=False)
        names = json.loads(path.read_text(encoding="utf-8"))
    except AccessError as exc:
        raise DynamicsError(str(exc)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DynamicsError(f"{path}: cannot be read as a JSON list of class names ({type(exc).__name__}: {exc}).") \
            from None
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names)):
        raise DynamicsError(f"{path}: must be a JSON list of the class names in the order of the logits, "
                            f'e.g. ["negative", "positive"].')
    names = tuple(str(n) for n in names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DynamicsError(f"{path}: names {repeated} more than once; each class has one logit column.")
    return names


def _class_columns(names: tuple[str, ...], classes: Sequence[str] | None, path: Path) -> np.ndarray:
    """For each logit column of the dynamics (named by ``classes.json``), its index among the
    dataset's ``classes`` (by default the names sorted as the dataset loader sorts labels)."""
    if classes is None:
        import pandas as pd

        from analytics.datasets import _sorted_classes

        classes = _sorted_classes(pd.Series(list(names)))
    index = {str(name): i for i, name in enumerate(classes)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise DynamicsError(f"{path}: class {unknown[0]!r} is not a class of the dataset "
                            f"({len(unknown)} such; the dataset's classes: {list(index)[:20]}).")
    absent = [name for name in index if name not in set(names)]
    if absent:
        raise DynamicsError(f"{path}: lacks the dataset's classes {absent[:10]}; the model must have one "
                            "logit per class of the dataset.")
    return np.array([index[name] for name in names], dtype=np.int64)


def read_reference_dynamics(folder: str | Path, ids: Sequence[str], *, n_classes: int | None = None,
                            gold: np.ndarray | None = None, policy: Policy | None = None,
                            classes: Sequence[str] | None = None) -> tuple[TrainingDynamics, list[str]]:
    """Read ``dynamics_epoch_{e}.jsonl`` files and align them with the dataset's ``ids``.

    Parameters
    ----------
    folder : str or Path
        The folder of epoch files or a model output folder holding ``training_dynamics/``
        (see :func:`find_dynamics_folder`).
    ids : sequence of str
        The dataset's ids, in its order; the records' ``guid`` are matched against them.
    n_classes : int, optional
        The number of logits each record must have.
    gold : ndarray of shape (n_examples,), optional
        The dataset's label indices; a note says how many differ from the dynamics' gold.
    classes : sequence of str, optional
        The dataset's class names in index order. When the folder holds ``classes.json`` (the
        names in the order of the logits, as :class:`analytics.recorder.DynamicsRecorder` writes
        it), the logit columns and gold indices are mapped into this order (by default the names
        sorted as the dataset loader sorts labels). Without ``classes.json`` the indices are
        taken as already in the dataset's order, the sorted label names.

    Returns the dynamics (one seed) and notes for the user (e.g. guids not in the dataset).
    Raises :class:`DynamicsError` for a folder without epoch files, missing epochs, dataset ids
    absent from an epoch, guids matching no example, inconsistent class counts, a gold index
    beyond the classes or malformed lines (file and line named), a ``classes.json`` naming a
    class the dataset lacks, and when the operator's rules (``policy``: data roots, size cap; by
    default :meth:`Policy.from_env`) refuse the folder or one of its files. Only regular files
    are read, never a device or a pipe.
    """
    policy = policy or Policy.from_env()
    folder, files = _checked_epoch_files(folder, policy)
    names, columns, width = _logit_columns(folder, n_classes=n_classes, classes=classes, policy=policy)
    ids = [str(i) for i in ids]
    logits, file_gold, notes = _read_epochs(files, ids, width, named=names is not None)
    if columns is not None and (columns != np.arange(len(columns))).any():
        logits = logits[..., np.argsort(columns)]   # column j of the file is the dataset's class columns[j]
        file_gold = columns[file_gold]
        notes.append(f"The logits were recorded in the class order of {CLASSES_FILE} ({list(names)[:10]}) and "
                     "were mapped into the dataset's order.")
    if gold is not None and (gold != file_gold).any():
        differ = int((gold != file_gold).sum())
        notes.append(f"{differ} examples have a different gold label in the dynamics than in the "
                     "dataset; the scores use the labels the model was trained on (the dynamics').")
    return TrainingDynamics(logits=logits, gold=file_gold, source="reference"), notes


def _checked_epoch_files(folder: str | Path, policy: Policy) -> tuple[Path, dict[int, Path]]:
    """The folder of epoch files that ``folder`` names and its files by epoch, each allowed by
    ``policy``; the epochs run from 0 without gaps."""
    folder = find_dynamics_folder(folder, policy=policy)
    files = dynamics_epoch_files(folder)
    for name in files.values():
        try:
            resolve_data_path(name, policy, what="dynamics file", allow_dir=False)
        except AccessError as exc:
            raise DynamicsError(str(exc)) from None
    epochs = sorted(files)
    missing = sorted(set(range(epochs[-1] + 1)) - set(epochs))
    if missing:
        raise DynamicsError(f"{folder}: epochs {missing} are missing (found {epochs}); "
                            "epochs must run from 0 without gaps.")
    return folder, files


def _logit_columns(folder: Path, *, n_classes: int | None, classes: Sequence[str] | None,
                   policy: Policy) -> tuple[tuple[str, ...] | None, np.ndarray | None, int | None]:
    """``(names, columns, width)``: the class names of ``folder``'s ``classes.json`` (None without
    one), each logit column's index among the dataset's classes (None without one; see
    :func:`_class_columns`) and the number of logits a record must have (None: taken from the
    first record)."""
    names = read_dynamics_classes(folder, policy=policy)
    if classes is not None and n_classes is not None and len(classes) != n_classes:
        raise ValueError(f"n_classes={n_classes} but {len(classes)} classes were given.")
    columns = None
    width = n_classes or (len(classes) if classes is not None else None)
    if names is not None:
        columns = _class_columns(names, classes, folder / CLASSES_FILE)
        if width is not None and width != len(names):
            raise DynamicsError(f"{folder / CLASSES_FILE}: names {len(names)} classes; the dataset has {width}.")
        width = len(names)
    return names, columns, width


def _read_epochs(files: dict[int, Path], ids: list[str], width: int | None, *,
                 named: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every epoch file's logits and gold indices, in the order of ``ids``.

    Returns
    -------
    logits : ndarray of shape (1, n_epochs, len(ids), width), float32, in the files' column order
    gold : ndarray of shape (len(ids),), int64
    notes : list of str, for the user (guids not in the dataset)
    """
    epochs = sorted(files)
    position = {guid: i for i, guid in enumerate(ids)}
    logits = None
    file_gold = np.full(len(ids), -1, dtype=np.int64)
    notes: list[str] = []
    for epoch in epochs:
        path = files[epoch]
        rows, values_by_row, labels, unknown, width = _read_epoch_records(path, epoch, position, width, named=named)
        if not rows:
            raise DynamicsError(f"{path}: none of its guids match the dataset's ids "
                                f"(e.g. {unknown[:3]}).")
        if logits is None:
            logits = np.zeros((1, len(epochs), len(ids), width), dtype=np.float32)
        try:
            logits[0, epoch, rows] = np.asarray(values_by_row, dtype=np.float32)
        except (TypeError, ValueError) as exc:  # a logit that is not a number
            raise DynamicsError(f"{path}: holds logits that are not numbers ({exc}).") from None
        file_gold[rows] = labels
        seen = np.zeros(len(ids), dtype=bool)
        seen[rows] = True
        if not seen.all():
            absent = [ids[i] for i in np.flatnonzero(~seen)[:5]]
            raise DynamicsError(f"{path}: {int((~seen).sum())} dataset ids have no logits in epoch "
                                f"{epoch}, e.g. {absent}.")
        if unknown and epoch == 0:
            notes.append(f"{len(unknown)} guids in the dynamics are not in the dataset and were "
                         f"ignored, e.g. {unknown[:3]}.")
    return logits, file_gold, notes


def _read_epoch_records(path: Path, epoch: int, position: dict[str, int], width: int | None, *,
                        named: bool) -> tuple[list[int], list, list[int], list[str], int | None]:
    """The records of one epoch file: ``(rows, logits, gold, unknown, width)``, the dataset row,
    logits and gold index of each record whose guid is in ``position``, the guids that are not,
    and the number of logits per record (``width``, or the first record's when None).
    ``named``: the class indices are those of ``classes.json`` (said in an error)."""
    key = f"logits_epoch_{epoch}"
    rows, values_by_row, labels = [], [], []
    unknown = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                guid, values, label = str(record["guid"]), record[key], int(record["gold"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DynamicsError(f"{path}: line {line_number} is not a dynamics record with "
                                    f"'guid', '{key}' and 'gold' ({type(exc).__name__}: {exc}).") from None
            row = position.get(guid)
            if row is None:
                unknown.append(guid)
                continue
            if width is None:
                width = len(values)
            if len(values) != width:
                raise DynamicsError(f"{path}: line {line_number} has {len(values)} logits; "
                                    f"expected {width} (one per class).")
            if not 0 <= label < width:
                raise DynamicsError(f"{path}: line {line_number} has gold {label}, beyond the {width} classes "
                                    f"(indices 0..{width - 1}"
                                    f"{' of ' + CLASSES_FILE if named else ''}).")
            rows.append(row)
            values_by_row.append(values)
            labels.append(label)
    return rows, values_by_row, labels, unknown, width


def write_dynamics_epoch(folder: str | Path, epoch: int, ids: Sequence[str], logits: np.ndarray,
                         gold: np.ndarray) -> Path:
    """Write one epoch as ``folder/dynamics_epoch_{epoch}.jsonl`` (reference format), atomically.

    Parameters
    ----------
    ids : sequence of str, length n
    logits : ndarray of shape (n, n_classes)
        Written as the float32 values they hold (what torch's ``.tolist()`` writes in the
        reference code), so they read back exactly.
    gold : ndarray of shape (n,), int
    """
    key = f"logits_epoch_{epoch}"
    values = np.asarray(logits, dtype=np.float32).astype(np.float64).tolist()
    labels = np.asarray(gold, dtype=np.int64).tolist()
    text = "".join(json.dumps({"guid": str(guid), key: row, "gold": label}) + "\n"
                   for guid, row, label in zip(ids, values, labels))
    path = Path(folder) / f"dynamics_epoch_{epoch}.jsonl"
    atomic_write_text(path, text)
    return path


def write_reference_dynamics(dynamics: TrainingDynamics, ids: Sequence[str], folder: str | Path,
                             *, seed: int = 0, classes: Sequence[str] | None = None) -> list[Path]:
    """Write one seed's dynamics as ``dynamics_epoch_{e}.jsonl`` files (reference format), and
    with ``classes`` (the label names in the order of the logit columns) ``classes.json``."""
    folder = Path(folder)
    if classes is not None:
        atomic_write_text(folder / CLASSES_FILE, json.dumps([str(name) for name in classes]) + "\n")
    return [write_dynamics_epoch(folder, epoch, ids, dynamics.logits[seed, epoch], dynamics.gold)
            for epoch in range(dynamics.n_epochs)]


# --------------------------------------------------------------------------- checkpoints


def checkpoint_dynamics(checkpoints: Sequence[str | Path], gold: np.ndarray, *, run_one: Callable,
                        progress: Progress | None = None, executor=None,
                        notes: list[str] | None = None) -> TrainingDynamics:
    """Logits of each checkpoint (in epoch order) on the dataset, and their Variance of Gradients.

    ``run_one(path)`` returns the logits of one checkpoint, shape (n, K), or a dict with
    ``logits``, ``gradients`` (n, D) — each example's gradient of its gold logit with respect to
    the model input at that checkpoint, or None — and optionally ``note`` (why there are no
    gradients), as :func:`analytics.embeddings.checkpoint_outputs` gives with
    ``output="logits"``; a ``(logits, gradients)`` tuple is taken too. The caller binds the
    dataset's inputs (texts, images or features) so this module stays free of data loading.
    Each checkpoint is one epoch of the VoG accumulator (:mod:`analytics.vog`; the gradients
    arrive already reduced, so they are accumulated as given); ``vog`` is set when every
    checkpoint gave gradients of one width and there are at least two checkpoints, else it is
    None and the reason is appended to ``notes``.
    Each checkpoint is one unit of ``executor`` (this process by default); for a remote one,
    ``run_one`` must pickle by reference: a module-level function or a ``functools.partial`` of one.
    """
    from analytics.parallel import LOCAL

    per_epoch: list = [None] * len(checkpoints)
    vog: dict = {"accumulator": None, "missing": []}

    def keep(epoch: int, result) -> None:
        if isinstance(result, dict):
            logits, gradients = result["logits"], result.get("gradients")
            if gradients is None:
                vog["missing"].append(f"{Path(checkpoints[epoch]).name}: {result.get('note') or 'no gradients'}")
        elif isinstance(result, tuple):
            logits, gradients = result
        else:
            logits, gradients = result, None
        logits = np.array(logits, dtype=np.float32)  # a copy: a remote result is a read-only buffer
        if logits.ndim != 2 or logits.shape[0] != len(gold):
            raise DynamicsError(f"{checkpoints[epoch]}: gave outputs of shape {logits.shape}; expected "
                                f"({len(gold)}, n_classes) logits.")
        earlier = next((e for e, kept in enumerate(per_epoch) if kept is not None), None)
        if earlier is not None and logits.shape != per_epoch[earlier].shape:
            raise DynamicsError(f"{checkpoints[epoch]}: gives {logits.shape[1]} outputs but {checkpoints[earlier]} "
                                f"gave {per_epoch[earlier].shape[1]}.")
        per_epoch[epoch] = logits
        _accumulate_checkpoint_vog(vog, gradients, len(gold), Path(checkpoints[epoch]).name)

    (executor or LOCAL).map(_run_checkpoint, [{"path": path} for path in checkpoints], shared={"run_one": run_one},
                            progress=progress, label="Checkpoint", on_result=keep)
    if int(gold.max()) >= per_epoch[0].shape[1]:
        raise DynamicsError(f"The checkpoints give {per_epoch[0].shape[1]} outputs but the dataset "
                            f"has label index {int(gold.max())}: they are not logits over its classes.")
    accumulator, raw, reason = vog["accumulator"], None, None
    if vog["missing"]:
        reason = "no usable input gradients from " + "; ".join(vog["missing"][:3])
    elif accumulator is not None and len(checkpoints) < 2:
        reason = "it needs at least two checkpoints"
    elif accumulator is not None and accumulator.epochs == len(checkpoints):
        raw = accumulator.raw()
    if reason and notes is not None:
        notes.append(f"No Variance of Gradients (vog): {reason}.")
    return TrainingDynamics(logits=np.stack(per_epoch)[None], gold=gold, source="checkpoints",
                            early_epoch=min(len(per_epoch) - 1, max(0, len(per_epoch) // 5)), vog=raw)


def _accumulate_checkpoint_vog(vog: dict, gradients, n: int, name: str) -> None:
    """One checkpoint's gradients as one epoch of ``vog["accumulator"]`` (made on the first)."""
    if gradients is None or vog["missing"]:
        return
    gradients = np.asarray(gradients)
    if gradients.ndim != 2 or gradients.shape[0] != n:
        raise DynamicsError(f"{name}: gave input gradients of shape {gradients.shape}; expected ({n}, dims).")
    from analytics.vog import VogAccumulator

    if vog["accumulator"] is None:
        vog["accumulator"] = VogAccumulator(n, gradients.shape[1], dims=None)  # reduced by the worker
    if vog["accumulator"].width != gradients.shape[1]:
        vog["missing"].append(f"{name}: its input gradients have {gradients.shape[1]} dimensions, "
                              f"the first checkpoint's {vog['accumulator'].width}")
        return
    vog["accumulator"].add(np.arange(n), gradients)
    vog["accumulator"].end_epoch()


def _run_checkpoint(run_one: Callable, path: str | Path):
    """One unit of :func:`checkpoint_dynamics` (module-level, so a Ray worker can import it)."""
    return run_one(path)


# --------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class ProbeConfig:
    """A probe trained on the embeddings. ``hidden=0`` is a linear head.

    ``scheme``: "independent" trains ``seeds`` probes on every example for the dynamics and
    ``folds`` more for the out-of-fold probabilities; "cross-fit" gets both from ``seeds + 1``
    probes (:func:`cross_fit_dynamics`; ``folds`` is then unused); "auto" picks cross-fit from
    ``CROSS_FIT_FROM`` examples on (see :func:`resolve_scheme`).

    ``vog``: also compute the Variance of Gradients of every example (one-hidden-layer heads
    only; see :func:`fit_probe_run`). It costs about one more forward and backward pass per
    epoch: +17% CPU time on the Debian sample (1,549 × 384), +68% at 100k × 384.
    """

    hidden: int = 256
    epochs: int = 10
    seeds: int = 3
    batch_size: int | None = None
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    folds: int = 5
    device: str | None = None
    scheme: str = "auto"
    vog: bool = True

    #: "auto" trains cross-fitted dynamics (see :func:`cross_fit_dynamics`) from this many examples on.
    CROSS_FIT_FROM: ClassVar[int] = 100_000  # at 100k its scores agree with the standard scheme's as
    # closely as that scheme agrees with itself under new seeds (docs/BENCHMARKS.md §2), in 2.4x less training

    def batch_for(self, n: int) -> int:
        """The given batch size, or about 100 steps per epoch (between 32 and 2048 examples)."""
        return self.batch_size or int(np.clip(n // 100, 32, 2048))

    @property
    def early_epoch(self) -> int:
        """The epoch taken as "early in training" for EL2N/GraNd: the first fifth of training."""
        return max(0, math.ceil(self.epochs / 5) - 1)


def _standardise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    scale = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(scale > 1e-8, scale, 1.0)


def _head(d: int, k: int, hidden: int):
    import torch

    if hidden <= 0:
        return torch.nn.Linear(d, k)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, k))


def fit_probe_run(features, gold, train_rows: np.ndarray, held_rows: np.ndarray | None, seed: int,
                  n_classes: int, config: ProbeConfig, *, record: bool = True,
                  progress: Progress | None = None, vog_rows: np.ndarray | None = None) -> dict:
    """Train one probe on ``train_rows`` and return what it saw and what it predicts.

    The unit of work behind :func:`train_probe`, :func:`cross_fit_probabilities` and
    :func:`cross_fit_dynamics` (and what a Ray worker runs): the head of ``config`` initialised
    after ``torch.manual_seed(seed)``, AdamW, ``config.epochs`` epochs over ``train_rows`` in the
    order of ``torch.randperm`` from a CPU generator seeded with ``seed``, minibatches of
    ``config.batch_for(len(train_rows))``. With ``record``, each training row's logits are kept
    from the training-mode forward pass of its minibatch, before that minibatch's update (as
    the Dataset Cartography reference code logs them), and at ``config.early_epoch`` the
    squared norm of the last layer's input (for GraNd).

    Also with ``record``, and for a one-hidden-layer head, the Variance of Gradients of each
    training row (:mod:`analytics.vog`): the gradient of the gold logit with respect to the
    probe's input, which is the *standardised* embedding (``features`` as given here), with the
    weights as they stand at the end of every epoch, in eval mode (the paper's checkpoint per
    epoch). The head's weights are saved at each epoch's end (a few MB) and the gradients are
    computed after training, in closed form, a chunk of rows at a time for all epochs at once
    (:func:`_probe_vog`): exact, and no n × d accumulator is needed even at 1M examples. A
    linear head gets none: its input gradient is the gold class's weight row, the same for
    every example of a class, so VoG standardised within the class would be 0 everywhere.

    Parameters
    ----------
    features : ndarray or torch tensor of shape (n, d), float32, standardised
    gold : ndarray or torch tensor of shape (n,), int64
    vog_rows : ndarray of int, optional
        The positions, in ``train_rows``, of the rows whose VoG is wanted; all by default.

    Returns
    -------
    dict with ``logits`` (epochs, len(train_rows), n_classes) float32 and ``norms``
    (len(train_rows),) float32 (both None without ``record``), ``vog`` (len(vog_rows),)
    float64, the raw VoG (None without ``record`` or ``config.vog``, or for a linear head), and ``held_probs``
    (len(held_rows), n_classes) float32: softmax of the trained probe on ``held_rows``.
    """
    import torch

    from analytics.device import default_device

    progress = progress or (lambda fraction, message: None)
    device = default_device(config.device)
    x_all = torch.as_tensor(features, device=device)
    y_all = torch.as_tensor(gold, device=device)
    train_rows = np.asarray(train_rows, dtype=np.int64)
    torch.manual_seed(seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    model = _head(x_all.shape[1], n_classes, config.hidden).to(device)
    train_index = torch.from_numpy(train_rows).to(device)
    logits, norms, snapshots = _train_head(model, x_all, y_all, train_index, generator, config, n_classes,
                                           device=device, record=record, progress=progress)
    held_probs = _predict_head(model, x_all, held_rows, n_classes, device=device)
    progress(1.0, "trained")
    vog_index = train_index if vog_rows is None else train_index[torch.as_tensor(vog_rows, device=device)]
    vog = None if snapshots is None else _probe_vog(snapshots, x_all, y_all, vog_index)
    return {"logits": logits, "norms": norms, "vog": vog, "held_probs": held_probs}


def _train_head(model, x_all, y_all, train_index, generator, config: ProbeConfig, n_classes: int, *,
                device, record: bool, progress: Progress) -> tuple[np.ndarray | None, np.ndarray | None, list | None]:
    """Train ``model`` on the rows ``train_index`` as :func:`fit_probe_run` says.

    Returns the logits (epochs, m, n_classes) and the early epoch's squared norms (m,) with
    ``record``, else None, and the head's (W₁, b₁, W₂) at each epoch's end for VoG (None unless
    ``record`` and ``config.vog`` for a one-hidden-layer head).
    """
    import torch

    m = len(train_index)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    batch_size = config.batch_for(m)
    logits = np.empty((config.epochs, m, n_classes), dtype=np.float32) if record else None
    norms = np.empty(m, dtype=np.float32) if record else None
    snapshots = [] if record and config.vog and config.hidden > 0 else None  # the head at each epoch's end
    captured = {}
    last = model if config.hidden <= 0 else model[2]
    hook = last.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0])) \
        if record else None
    model.train()
    for epoch in range(config.epochs):
        progress(epoch / config.epochs, f"epoch {epoch + 1} of {config.epochs}")
        permutation = torch.randperm(m, generator=generator).to(device)
        order = train_index[permutation]
        epoch_logits = torch.empty((m, n_classes), device=device) if record else None
        for start in range(0, m, batch_size):
            batch = order[start:start + batch_size]
            output = model(x_all[batch])
            if record:
                positions = permutation[start:start + batch_size]
                epoch_logits[positions] = output.detach()
                if epoch == config.early_epoch:
                    norms[positions.cpu().numpy()] = captured["h"].detach().pow(2).sum(1).cpu().numpy()
            loss = torch.nn.functional.cross_entropy(output, y_all[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        if record:
            logits[epoch] = epoch_logits.cpu().numpy()
        if snapshots is not None:
            snapshots.append(tuple(p.detach().clone() for p in (model[0].weight, model[0].bias, model[2].weight)))
    if hook is not None:
        hook.remove()
    return logits, norms, snapshots


def _predict_head(model, x_all, held_rows: np.ndarray | None, n_classes: int, *, device) -> np.ndarray:
    """(len(held_rows), n_classes) float32: softmax of the trained ``model`` in eval mode on
    ``held_rows`` (none when None), 65,536 rows at a time."""
    import torch

    held = np.asarray(held_rows if held_rows is not None else [], dtype=np.int64)
    held_probs = np.empty((len(held), n_classes), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        held_index = torch.from_numpy(held).to(device)
        for start in range(0, len(held), 65536):
            chunk = held_index[start:start + 65536]
            held_probs[start:start + len(chunk)] = torch.softmax(model(x_all[chunk]), 1).cpu().numpy()
    return held_probs


# Rows per chunk of the VoG pass: about 4M floats of gradients (epochs × rows × dimensions) at a time.
_VOG_CHUNK_FLOATS = 1 << 22


def _probe_vog(snapshots: list[tuple], x_all, y_all, train_index) -> np.ndarray:
    """Raw VoG of every row of ``train_index`` for a one-hidden-layer head z = W₂ relu(W₁x + b₁) + b₂.

    ``snapshots`` holds (W₁, b₁, W₂) at the end of each epoch t. The gold logit's input gradient
    is S_t(x) = W₁,ₜᵀ (1[W₁,ₜx + b₁,ₜ > 0] ⊙ W₂,ₜ[y]) (the ReLU's derivative taken as 0 at 0, as
    autograd does). For a chunk of rows the gradients of all epochs, (epochs, rows, d), come
    from one matrix product for the pre-activations of every epoch and one batched product; their
    population variance over epochs (two-pass, after subtracting the first epoch's gradient so
    float32 loses nothing to a large common part), averaged over the d dimensions, is the raw
    VoG. Memory is bounded by the chunk. The cost is about that of one more forward and
    backward pass per epoch.

    Returns
    -------
    ndarray of shape (len(train_index),), float64
    """
    import torch

    first_weight, first_bias, last_weight = (torch.stack(part) for part in zip(*snapshots))
    epochs, hidden, d = first_weight.shape
    every_first_weight, every_first_bias = first_weight.reshape(epochs * hidden, d), first_bias.reshape(-1)
    vog = np.empty(len(train_index), dtype=np.float64)
    step = max(1, _VOG_CHUNK_FLOATS // (epochs * max(hidden, d)))
    with torch.inference_mode():
        for start in range(0, len(train_index), step):
            rows = train_index[start:start + step]
            before = torch.addmm(every_first_bias, x_all[rows], every_first_weight.T)      # (q, T·h)
            active = before.view(len(rows), epochs, hidden).transpose(0, 1) > 0           # (T, q, h)
            gradients = torch.bmm(active * last_weight[:, y_all[rows]], first_weight)     # (T, q, d)
            gradients = gradients - gradients[:1]
            gradients -= gradients.mean(dim=0)
            vog[start:start + len(rows)] = gradients.square_().mean(dim=0).mean(dim=1).cpu().numpy()
    return vog


def resolve_scheme(config: ProbeConfig, gold: np.ndarray) -> str:
    """The training scheme a probe run uses: "independent" or "cross-fit" (see
    :func:`cross_fit_dynamics`). "auto" is cross-fit from ``ProbeConfig.CROSS_FIT_FROM``
    examples on, when every class has at least ``seeds + 1`` examples."""
    if config.scheme not in ("auto", "independent", "cross-fit"):
        raise ValueError(f"scheme must be 'auto', 'independent' or 'cross-fit', not {config.scheme!r}")
    counts = np.bincount(np.asarray(gold, dtype=np.int64))
    feasible = int(counts[counts > 0].min()) >= config.seeds + 1 and config.seeds >= 1
    if config.scheme == "cross-fit":
        if not feasible:
            raise DynamicsError(f"Cross-fitted dynamics need at least {config.seeds + 1} examples of "
                                f"every class; the smallest class has {int(counts[counts > 0].min())}.")
        return "cross-fit"
    if config.scheme == "auto" and feasible and len(gold) >= ProbeConfig.CROSS_FIT_FROM:
        return "cross-fit"
    return "independent"


def _shared_inputs(features: np.ndarray, gold: np.ndarray, executor, config: ProbeConfig) -> dict:
    """The standardised features and labels every unit reads: torch tensors on the device when
    the units run here (no copy per unit), numpy arrays for a remote executor."""
    x = _standardise(features)
    y = np.asarray(gold, dtype=np.int64)
    if executor is None or executor.name == "local":
        import torch

        from analytics.device import default_device

        device = default_device(config.device)
        return {"features": torch.from_numpy(x).to(device), "gold": torch.from_numpy(y).to(device)}
    return {"features": x, "gold": y}


def train_probe(features: np.ndarray, gold: np.ndarray, n_classes: int, config: ProbeConfig = ProbeConfig(),
                *, progress: Progress | None = None, executor=None, first_seed: int = 0) -> TrainingDynamics:
    """Train the probe ``config.seeds`` times on every example, recording every example's logits
    each epoch (see :func:`fit_probe_run`; seed ``first_seed + s`` for run ``s``).

    Returns dynamics with logits of shape (seeds, epochs, n, n_classes), float32, and (for a
    one-hidden-layer head) the raw VoG of each example averaged over the seeds.
    """
    from analytics.parallel import LOCAL

    executor = executor or LOCAL
    n = len(gold)
    logits = np.empty((config.seeds, config.epochs, n, n_classes), dtype=np.float32)
    hidden_norms = np.empty((config.seeds, n), dtype=np.float32)
    vog = np.zeros(n, dtype=np.float64) if config.vog and config.hidden > 0 else None
    everything = np.arange(n, dtype=np.int64)

    def consume(seed: int, result: dict) -> None:
        logits[seed] = result["logits"]
        hidden_norms[seed] = result["norms"]
        if vog is not None:
            vog[:] += result["vog"] / config.seeds

    executor.map(fit_probe_run, [{"seed": first_seed + seed} for seed in range(config.seeds)],
                 shared={**_shared_inputs(features, gold, executor, config), "train_rows": everything,
                         "held_rows": None, "n_classes": n_classes, "config": config},
                 progress=progress, label="Probe: seed", on_result=consume)
    (progress or (lambda fraction, message: None))(1.0, "Probe trained")
    return TrainingDynamics(logits=logits, gold=np.asarray(gold, dtype=np.int64), source="probe",
                            hidden_norms=hidden_norms, early_epoch=config.early_epoch, vog=vog)


def fold_count(gold: np.ndarray, folds: int) -> int:
    """How many stratified folds ``gold`` can be split into when ``folds`` are asked for: no more
    than its smallest class has examples (each fold holds one of them), and at least 2."""
    counts = np.bincount(np.asarray(gold, dtype=np.int64))
    return max(2, min(folds, int(counts[counts > 0].min())))


def heldout_folds(config: ProbeConfig, scheme: str | None, gold: np.ndarray) -> int:
    """How many folds give the probe's out-of-fold probabilities: one per probe under the
    cross-fit ``scheme`` (:func:`cross_fit_dynamics`: seeds + 1), else the folds
    :func:`cross_fit_probabilities` makes (:func:`fold_count`)."""
    return config.seeds + 1 if scheme == "cross-fit" else fold_count(gold, config.folds)


def _stratified_folds(gold: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    return list(splitter.split(np.zeros(len(gold)), gold))


def cross_fit_probabilities(features: np.ndarray, gold: np.ndarray, n_classes: int,
                            config: ProbeConfig = ProbeConfig(), *, progress: Progress | None = None,
                            executor=None, first_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold class probabilities by stratified K-fold cross-fitting.

    Each example's probabilities come from a probe that never saw it (fold ``f`` trained with
    seed ``first_seed + f``, same head and epochs as :func:`train_probe`).

    Returns
    -------
    probabilities : ndarray of shape (n, n_classes), float32
    fold : ndarray of shape (n,), int — the fold each example was held out in
    """
    from analytics.parallel import LOCAL

    executor = executor or LOCAL
    gold = np.asarray(gold, dtype=np.int64)
    n = len(gold)
    splits = _stratified_folds(gold, fold_count(gold, config.folds))
    probabilities = np.zeros((n, n_classes), dtype=np.float32)
    fold_of = np.empty(n, dtype=np.int64)

    def consume(fold: int, result: dict) -> None:
        probabilities[splits[fold][1]] = result["held_probs"]
        fold_of[splits[fold][1]] = fold

    executor.map(fit_probe_run, [{"seed": first_seed + fold, "train_rows": train, "held_rows": held}
                                 for fold, (train, held) in enumerate(splits)],
                 shared={**_shared_inputs(features, gold, executor, config), "n_classes": n_classes,
                         "config": config, "record": False},
                 progress=progress, label="Held-out probabilities: fold", on_result=consume)
    (progress or (lambda fraction, message: None))(1.0, "Held-out probabilities ready")
    return probabilities, fold_of


def cross_fit_dynamics(features: np.ndarray, gold: np.ndarray, n_classes: int,
                       config: ProbeConfig = ProbeConfig(), *, progress: Progress | None = None,
                       executor=None) -> tuple[TrainingDynamics, np.ndarray, np.ndarray]:
    """Training dynamics and out-of-fold probabilities from the same ``seeds + 1`` probes.

    The examples are split into K = ``config.seeds + 1`` stratified folds and probe ``j``
    (seed ``j``) trains on every fold but ``j``, recording the logits of its training rows
    each epoch as :func:`train_probe` does. Every example is thus trained on by K − 1 = seeds
    probes, whose trajectories are its seeds (in probe order), and held out from exactly one,
    whose prediction is its out-of-fold probability. Compared with :func:`train_probe` plus
    :func:`cross_fit_probabilities` (seeds runs on all n and ``folds`` runs on (folds − 1)/folds
    of n), this trains on seeds · n examples per epoch instead of about (seeds + folds − 1) · n:
    at 3 seeds and 5 folds, 2.3× less work. Each trajectory comes from a probe trained on
    seeds/(seeds + 1) of the data rather than all of it, a difference that shrinks as n grows;
    the pipeline uses it from ``ProbeConfig.CROSS_FIT_FROM`` examples on and records it.

    An example's VoG comes from one probe, the one that gives its seed-0 trajectory, rather than
    the mean over its ``seeds`` probes (as :func:`train_probe` gives): VoG costs about one more
    forward and backward pass per epoch over the rows it is computed for, so this keeps it at
    n rows per epoch instead of seeds · n where n is large (at 1M × 384 on 2 cores, an estimated
    30 s instead of 90 s).

    Returns
    -------
    dynamics : TrainingDynamics, logits of shape (seeds, epochs, n, n_classes)
    probabilities : ndarray of shape (n, n_classes), float32
    fold : ndarray of shape (n,), int
    """
    from analytics.parallel import LOCAL

    executor = executor or LOCAL
    gold = np.asarray(gold, dtype=np.int64)
    n, seeds = len(gold), config.seeds
    splits = _stratified_folds(gold, seeds + 1)
    fold_of = np.empty(n, dtype=np.int64)
    for fold, (_, held) in enumerate(splits):
        fold_of[held] = fold
    logits = np.empty((seeds, config.epochs, n, n_classes), dtype=np.float32)
    hidden_norms = np.empty((seeds, n), dtype=np.float32)
    probabilities = np.zeros((n, n_classes), dtype=np.float32)
    vog = np.zeros(n, dtype=np.float64) if config.vog and config.hidden > 0 else None

    # a row held out in fold f gets probe j as its seed j (j < f) or j - 1 (j > f)
    slots = [np.where(model < fold_of[train], model, model - 1) for model, (train, _) in enumerate(splits)]

    def consume(model: int, result: dict) -> None:
        train, held = splits[model]
        slot = slots[model]
        if vog is not None:
            vog[train[slot == 0]] = result["vog"]
        for seed in (model - 1, model):
            if 0 <= seed < seeds:
                positions = np.flatnonzero(slot == seed)
                rows = train[positions]
                logits[seed][:, rows] = result["logits"][:, positions]
                hidden_norms[seed, rows] = result["norms"][positions]
        probabilities[held] = result["held_probs"]

    executor.map(fit_probe_run, [{"seed": model, "train_rows": train, "held_rows": held,
                                  "vog_rows": np.flatnonzero(slots[model] == 0)}
                                 for model, (train, held) in enumerate(splits)],
                 shared={**_shared_inputs(features, gold, executor, config), "n_classes": n_classes, "config": config},
                 progress=progress, label="Cross-fitted probe", on_result=consume)
    (progress or (lambda fraction, message: None))(1.0, "Probes trained")
    dynamics = TrainingDynamics(logits=logits, gold=gold, source="probe", hidden_norms=hidden_norms,
                                early_epoch=config.early_epoch, vog=vog)
    return dynamics, probabilities, fold_of


# --------------------------------------------------------------------------- many probes at once


@dataclass(frozen=True, eq=False)
class ProbeStack:
    """M probes of one architecture, trained side by side (see :func:`fit_probes`).

    Attributes
    ----------
    layers : tuple of (weight, bias) torch tensors
        weight of shape (M, d_in, d_out), bias of shape (M, 1, d_out); one pair for a linear
        head, two (with a ReLU between) for a one-hidden-layer head.
    n_classes : int
    """

    layers: tuple
    n_classes: int

    @property
    def n_probes(self) -> int:
        return int(self.layers[0][0].shape[0])

    def logits(self, x):
        """Logits of every probe on ``x`` (torch tensor (q, d) shared by all, or (M, q, d)):
        a tensor of shape (M, q, n_classes)."""
        import torch

        out = x
        for position, (weight, bias) in enumerate(self.layers):
            out = torch.matmul(out, weight) + bias
            if position < len(self.layers) - 1:
                out = torch.relu(out)
        return out


# Members trained together are capped so one minibatch's activations stay near 64M floats.
_STACK_FLOATS = 1 << 26
# Below this many floats per minibatch, a CPU step is faster on one thread: handing tiny matrix
# products to a second thread costs more than the arithmetic (25x slower on a busy 2-core box).
_PARALLEL_FLOATS = 1 << 22
_threads_lock = threading.Lock()
_threads_state = {"users": 0, "saved": 1}


@contextmanager
def _one_thread_if_small(work: int, device):
    """Run small CPU training on one thread; restores the thread count when the last user leaves."""
    import torch

    if device.type != "cpu" or work >= _PARALLEL_FLOATS:
        yield
        return
    with _threads_lock:
        if _threads_state["users"] == 0:
            _threads_state["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_state["users"] += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_state["users"] -= 1
            if _threads_state["users"] == 0:
                torch.set_num_threads(_threads_state["saved"])


def fit_probes(features, rows: np.ndarray, targets: np.ndarray, n_classes: int,
               config: ProbeConfig = ProbeConfig(), *, seeds: Sequence[int],
               progress: Progress | None = None) -> ProbeStack:
    """Train M probes side by side, probe i on the rows ``rows[i]`` with labels ``targets[i]``.

    Each probe is the probe of :func:`cross_fit_probabilities`, trained as it is: the head of
    ``config`` initialised after ``torch.manual_seed(seed)``, AdamW with the same learning rate
    and weight decay, ``config.epochs`` epochs over its rows in the order of
    ``torch.randperm`` from a CPU generator seeded with ``seed``, minibatches of
    ``config.batch_for(m)`` and the mean cross-entropy per minibatch. The probes share no
    parameters and AdamW is element-wise, so training them in one batched pass is training
    each alone (up to floating-point rounding); it only saves the per-step overhead that
    dominates many small fits.

    Parameters
    ----------
    features : ndarray or torch tensor of shape (n, d)
        Used as given (standardise beforehand); a tensor already on the device is not copied.
    rows : ndarray of shape (M, m), int
        Probe i's training rows (every probe trains on m rows).
    targets : ndarray of shape (M, m), int
        The class index each probe learns for each of its rows.
    seeds : sequence of M ints
    """
    import torch

    from analytics.device import default_device

    rows = np.asarray(rows, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    seeds = [int(s) for s in seeds]
    if rows.ndim != 2 or rows.shape != targets.shape or len(seeds) != rows.shape[0]:
        raise ValueError(f"rows {rows.shape} and targets {targets.shape} must both be (M, m), with "
                         f"one seed per probe (got {len(seeds)}).")
    if rows.shape[1] == 0:
        raise ValueError("Every probe needs at least one training row.")
    if targets.min() < 0 or targets.max() >= n_classes:
        raise ValueError(f"targets must be class indices in 0..{n_classes - 1}.")
    progress = progress or (lambda fraction, message: None)
    device = default_device(config.device)
    x_all = torch.as_tensor(np.asarray(features, dtype=np.float32) if isinstance(features, np.ndarray)
                            else features, device=device)
    d, m = x_all.shape[1], rows.shape[1]
    batch_size = config.batch_for(m)
    chunk = max(1, _STACK_FLOATS // (batch_size * max(d, config.hidden, n_classes)))
    parts = []
    width = max(d, config.hidden, n_classes)
    for start in range(0, len(seeds), chunk):
        progress(start / len(seeds), f"Training probes {start + 1}-{min(start + chunk, len(seeds))} of {len(seeds)}")
        members = min(chunk, len(seeds) - start)
        with _one_thread_if_small(members * batch_size * width, device):
            parts.append(_fit_stack(x_all, rows[start:start + chunk], targets[start:start + chunk], n_classes,
                                    config, seeds[start:start + chunk], batch_size, device))
    progress(1.0, "Probes trained")
    layers = tuple((torch.cat([p[i][0] for p in parts]), torch.cat([p[i][1] for p in parts]))
                   for i in range(len(parts[0])))
    return ProbeStack(layers=layers, n_classes=n_classes)


def _fit_stack(x_all, rows: np.ndarray, targets: np.ndarray, n_classes: int, config: ProbeConfig,
               seeds: list[int], batch_size: int, device) -> tuple:
    import torch

    d = x_all.shape[1]
    initial = []
    for seed in seeds:
        torch.manual_seed(seed)
        head = _head(d, n_classes, config.hidden)
        linears = [head] if config.hidden <= 0 else [head[0], head[2]]
        initial.append([(layer.weight.detach().T.contiguous(), layer.bias.detach()[None].clone())
                        for layer in linears])
    layers = [(torch.stack([member[i][0] for member in initial]).to(device).requires_grad_(),
               torch.stack([member[i][1] for member in initial]).to(device).requires_grad_())
              for i in range(len(initial[0]))]
    stack = ProbeStack(layers=tuple(layers), n_classes=n_classes)
    optimiser = torch.optim.AdamW([p for layer in layers for p in layer], lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    member_rows = torch.from_numpy(rows).to(device)
    member_targets = torch.from_numpy(targets).to(device)
    members, m = rows.shape
    for _ in range(config.epochs):
        order = torch.stack([torch.randperm(m, generator=g) for g in generators]).to(device)
        epoch_rows = member_rows.gather(1, order)
        epoch_targets = member_targets.gather(1, order)
        for start in range(0, m, batch_size):
            batch = epoch_rows[:, start:start + batch_size]
            output = stack.logits(x_all[batch])
            losses = torch.nn.functional.cross_entropy(
                output.reshape(-1, n_classes), epoch_targets[:, start:start + batch_size].reshape(-1),
                reduction="none").view(members, -1).mean(1)
            optimiser.zero_grad(set_to_none=True)
            losses.sum().backward()  # each probe's gradient is that of its own mean loss
            optimiser.step()
    return tuple((w.detach(), b.detach()) for w, b in layers)


def predict_probes(stack: ProbeStack, features, rows: np.ndarray) -> np.ndarray:
    """Class probabilities of every probe of ``stack`` on the rows ``rows`` of ``features``.

    Returns
    -------
    ndarray of shape (M, len(rows), n_classes), float32
    """
    import torch

    weight = stack.layers[0][0]
    x_all = torch.as_tensor(np.asarray(features, dtype=np.float32) if isinstance(features, np.ndarray)
                            else features, device=weight.device)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((stack.n_probes, len(rows), stack.n_classes), dtype=np.float32)
    widest = max(w.shape[2] for w, _ in stack.layers)
    step = max(1, _STACK_FLOATS // (stack.n_probes * widest))
    with torch.inference_mode():
        for start in range(0, len(rows), step):
            chunk = torch.from_numpy(rows[start:start + step]).to(weight.device)
            out[:, start:start + len(chunk)] = torch.softmax(stack.logits(x_all[chunk]), -1).cpu().numpy()
    return out
