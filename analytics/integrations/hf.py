"""Training dynamics from a Hugging Face ``Trainer`` (extra ``hf``: transformers and accelerate).

Wiring (a single process; see :class:`HFDynamicsCallback`)::

    from analytics.recorder import HFDynamicsCallback

    dynamics = HFDynamicsCallback(classes=label_names)           # label_names[j] is label j
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir="runs/bert", remove_unused_columns=False, ...),
        train_dataset=train,                                      # with a "guid" column of ids
        data_collator=dynamics.collator(DataCollatorWithPadding(tokenizer)),
        callbacks=[dynamics],
    )
    trainer.train()        # writes runs/bert/training_dynamics/dynamics_epoch_{e}.jsonl

then ``cartographer analyze DATASET --dynamics runs/bert``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from transformers import TrainerCallback, default_data_collator

from analytics.dynamics import DynamicsError
from analytics.recorder import DynamicsRecorder

__all__ = ["HFDynamicsCallback", "DynamicsCollator", "TaggedBatch"]


class TaggedBatch:
    """The ids and gold labels of one collated batch, carried to the model under the id column.

    Neither a mapping, a sequence nor a tensor, so the Trainer passes it through unchanged; the
    callback's forward pre-hook takes it out of the model's inputs before ``forward`` runs.
    """

    __slots__ = ("ids", "gold")

    def __init__(self, ids: list[str], gold) -> None:
        self.ids = ids
        self.gold = gold

    def __repr__(self) -> str:
        return f"TaggedBatch({len(self.ids)} ids)"


class DynamicsCollator:
    """Wrap a data collator so each batch carries its examples' ids (see :class:`HFDynamicsCallback`).

    Takes the id column out of every feature, collates the rest with ``base``, and adds
    ``batch[id_column] = TaggedBatch(ids, batch["labels"])``. Features without the column (an
    evaluation set, say) are collated as they are. Picklable, so it works with
    ``dataloader_num_workers > 0``.
    """

    def __init__(self, base: Callable[[list], Any], id_column: str = "guid") -> None:
        self.base = base
        self.id_column = id_column

    def __call__(self, features: list) -> Any:
        present = [isinstance(f, dict) and self.id_column in f for f in features]
        if not any(present):
            return self.base(features)
        if not all(present):
            raise DynamicsError(f"{present.count(False)} of {len(features)} examples in a batch have no "
                                f"'{self.id_column}'; every training example needs its id.")
        ids = [str(f[self.id_column]) for f in features]
        batch = self.base([{k: v for k, v in f.items() if k != self.id_column} for f in features])
        gold = next((batch[key] for key in ("labels", "label") if key in batch), None)
        batch[self.id_column] = TaggedBatch(ids, gold)
        return batch


class HFDynamicsCallback(TrainerCallback):
    """Record every example's logits from the training-pass forward of each epoch, as the
    Dataset Cartography reference does, with a ``transformers.Trainer``.

    A forward pre-hook on the model takes the batch's ids out of its inputs (the model never
    sees them) and a forward hook logs the logits of each forward in training mode into a
    :class:`~analytics.recorder.DynamicsRecorder`; evaluation forwards are not recorded. At
    each epoch's end ``training_dynamics/dynamics_epoch_{e}.jsonl`` is written, ``e`` being
    the Trainer's own epoch count.

    Wiring:

    - the training set has a column ``id_column`` (default ``"guid"``) holding each example's
      id as the dataset has it (the ``id`` column the app and CLI show), besides the model's
      inputs and ``label``/``labels`` (class indices);
    - ``TrainingArguments(remove_unused_columns=False)``: otherwise the Trainer drops the id
      column because the model's ``forward`` does not take it (so keep only the model's inputs,
      the labels and the ids in the dataset, e.g. ``dataset.map(tokenize,
      remove_columns=["text"])``);
    - ``data_collator=callback.collator(your_collator)`` (``default_data_collator`` when
      omitted), which carries the ids alongside each batch;
    - ``callbacks=[callback]``;
    - whole epochs (``num_train_epochs``, not a ``max_steps`` that ends mid-epoch), no
      ``dataloader_drop_last``; resume only from a checkpoint saved at an epoch's end
      (``save_strategy="epoch"``); epochs already written are kept and never overwritten.

    Label smoothing and ``compute_loss_func`` work: the gold labels are taken in the collator.
    The model's output must be a ``ModelOutput``/dict with ``logits``, a tensor of logits, or a
    tuple holding them (the first (batch, n_classes) tensor). One process only: under
    distributed or multi-GPU data-parallel training each process sees part of every batch.

    Parameters
    ----------
    out_dir : str or Path, optional
        The model output folder; by default ``TrainingArguments.output_dir``, which gives the
        allenai/cartography layout ``output_dir/training_dynamics/``.
    classes : sequence of str, optional
        The label names in index order (saved as ``classes.json``); see
        :class:`~analytics.recorder.DynamicsRecorder`.
    id_column : str, default "guid"
        The training set's column of example ids.
    """

    def __init__(self, out_dir: str | Path | None = None, classes: Sequence[str] | None = None, *,
                 id_column: str = "guid") -> None:
        self.out_dir = out_dir
        self.classes = classes
        self.id_column = id_column
        # made now when the folder is known, so wrong classes fail before training starts
        self.recorder = DynamicsRecorder(out_dir, classes) if out_dir is not None else None
        self._handles: list = []
        self._pending: TaggedBatch | None = None

    def collator(self, base: Callable[[list], Any] | None = None) -> DynamicsCollator:
        """``base`` (by default transformers' ``default_data_collator``), carrying the ids."""
        return DynamicsCollator(base or default_data_collator, self.id_column)

    # ------------------------------------------------------------------ Trainer events

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.world_size > 1 or args.n_gpu > 1:
            raise RuntimeError(f"HFDynamicsCallback records in one process on one device; this run has "
                               f"{args.world_size} processes and {args.n_gpu} GPUs per process. Train on one "
                               "device (e.g. CUDA_VISIBLE_DEVICES=0) to record the dynamics.")
        if model is None:
            raise RuntimeError("HFDynamicsCallback: the Trainer passed no model to on_train_begin.")
        if self.recorder is None:
            self.recorder = DynamicsRecorder(args.output_dir, self.classes)
        self._remove_hooks()
        self._handles = [model.register_forward_pre_hook(self._take_ids, with_kwargs=True),
                         model.register_forward_hook(self._record)]

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = float(state.epoch or 0.0)
        if not epoch.is_integer():
            raise RuntimeError(f"HFDynamicsCallback: training resumed at epoch {epoch:.3f}, in the middle of an "
                               f"epoch, so epoch {int(epoch)} would be recorded only in part. Resume from a "
                               "checkpoint saved at an epoch's end (save_strategy='epoch').")
        self.recorder.begin_epoch(int(epoch))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.recorder.end_epoch()

    def on_train_end(self, args, state, control, **kwargs):
        self._remove_hooks()

    # ------------------------------------------------------------------ hooks

    def _take_ids(self, module, args: tuple, kwargs: dict):
        self._pending = kwargs.pop(self.id_column, None)
        return args, kwargs

    def _record(self, module, args: tuple, output) -> None:
        tagged, self._pending = self._pending, None
        if not module.training:
            return
        if not isinstance(tagged, TaggedBatch):
            raise DynamicsError(
                f"HFDynamicsCallback: a training batch reached the model without its ids. Give the training set "
                f"a '{self.id_column}' column, pass TrainingArguments(remove_unused_columns=False) so the Trainer "
                f"keeps it, and data_collator=callback.collator(your_collator).")
        if tagged.gold is None:
            raise DynamicsError("HFDynamicsCallback: the collated batch has no 'labels' (or 'label'); the gold "
                                "class index of every example is needed.")
        self.recorder.log(tagged.ids, _logits_of(output, len(tagged.ids)), tagged.gold)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _logits_of(output, batch_size: int):
    """The (batch, n_classes) logits in a model's output."""
    import torch

    if isinstance(output, dict):  # ModelOutput is an OrderedDict
        if output.get("logits") is None:
            raise DynamicsError(f"HFDynamicsCallback: the model's output has no 'logits' (it has {list(output)}).")
        return output["logits"]
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for part in output:
            if isinstance(part, torch.Tensor) and part.ndim == 2 and part.shape[0] == batch_size:
                return part
    raise DynamicsError(f"HFDynamicsCallback: cannot find (batch, n_classes) logits in the model's output "
                        f"({type(output).__name__}).")
