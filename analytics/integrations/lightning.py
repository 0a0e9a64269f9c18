"""Training dynamics from a Lightning ``Trainer`` (extra ``lightning``).

Wiring (a single process; see :class:`LightningDynamicsCallback`)::

    from analytics.recorder import LightningDynamicsCallback

    class Classifier(L.LightningModule):
        def training_step(self, batch, batch_idx):
            logits = self.net(batch["x"])
            loss = F.cross_entropy(logits, batch["labels"])
            return {"loss": loss, "logits": logits}       # the batch carries "guid" and "labels"

    trainer = L.Trainer(max_epochs=5, callbacks=[LightningDynamicsCallback("runs/mlp", classes=names)])
    trainer.fit(Classifier(), loader)   # writes runs/mlp/training_dynamics/dynamics_epoch_{e}.jsonl
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

try:  # the unified package (extra "lightning"), else the standalone pytorch-lightning
    from lightning.pytorch import Callback
except ImportError:  # pragma: no cover - depends on what is installed
    from pytorch_lightning import Callback

from analytics.dynamics import DynamicsError
from analytics.recorder import DynamicsRecorder

__all__ = ["LightningDynamicsCallback"]


class LightningDynamicsCallback(Callback):
    """Record every example's logits from the training step of each epoch, as the Dataset
    Cartography reference does, with a Lightning ``Trainer``.

    The contract with the ``LightningModule``:

    - ``training_step`` returns a dict with ``"loss"`` and ``logits_key`` (default
      ``"logits"``): the (batch, n_classes) outputs the loss was computed from;
    - each example's id and gold class index come from that dict's ``id_key`` (default
      ``"guid"``) and ``label_key`` (default ``"labels"``) when it has them, otherwise from the
      batch, which is then a dict holding them (a ``Dataset`` whose items are dicts with
      ``"guid"`` and ``"labels"`` gives such batches with the default collate).

    At each training epoch's end ``training_dynamics/dynamics_epoch_{e}.jsonl`` is written,
    ``e`` being ``trainer.current_epoch``. Train whole epochs (no ``limit_train_batches`` below
    1.0, no ``drop_last``); resume from an end-of-epoch checkpoint (epochs already written are
    kept, never overwritten). One process only: under distributed training each process sees
    part of every epoch.

    Parameters
    ----------
    out_dir : str or Path, optional
        The model output folder; by default the trainer's ``default_root_dir``.
    classes : sequence of str, optional
        The label names in index order (saved as ``classes.json``); see
        :class:`~analytics.recorder.DynamicsRecorder`.
    id_key, label_key, logits_key : str
        Where the ids, gold labels and logits are found.
    """

    def __init__(self, out_dir: str | Path | None = None, classes: Sequence[str] | None = None, *,
                 id_key: str = "guid", label_key: str = "labels", logits_key: str = "logits") -> None:
        super().__init__()
        self.out_dir = out_dir
        self.classes = classes
        self.id_key, self.label_key, self.logits_key = id_key, label_key, logits_key
        # made now when the folder is known, so wrong classes fail before training starts
        self.recorder = DynamicsRecorder(out_dir, classes) if out_dir is not None else None

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            raise RuntimeError(f"LightningDynamicsCallback records in one process; this run has "
                               f"{trainer.world_size}. Train on one device to record the dynamics.")
        if self.recorder is None:
            self.recorder = DynamicsRecorder(trainer.default_root_dir, self.classes)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        batches = trainer.num_training_batches
        if batches != float("inf") and batches > 0:
            steps = math.ceil(batches / trainer.accumulate_grad_batches)
            if trainer.global_step % steps:
                raise RuntimeError(f"LightningDynamicsCallback: training resumed in the middle of epoch "
                                   f"{trainer.current_epoch}, which would be recorded only in part. Resume from a "
                                   "checkpoint saved at an epoch's end.")
        self.recorder.begin_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(outputs, Mapping) or outputs.get(self.logits_key) is None:
            raise DynamicsError(f"LightningDynamicsCallback: training_step must return a dict with 'loss' and "
                                f"'{self.logits_key}' (the batch's logits); it returned {type(outputs).__name__}"
                                f"{' with ' + str(list(outputs)) if isinstance(outputs, Mapping) else ''}.")
        self.recorder.log(self._find(self.id_key, outputs, batch), outputs[self.logits_key],
                          self._find(self.label_key, outputs, batch))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.recorder.end_epoch()

    def _find(self, key: str, outputs: Mapping, batch: Any):
        if key in outputs:
            return outputs[key]
        if isinstance(batch, Mapping) and key in batch:
            return batch[key]
        raise DynamicsError(f"LightningDynamicsCallback: neither training_step's output nor the batch has "
                            f"'{key}'. Return it from training_step, or use batches that are dicts holding it.")
