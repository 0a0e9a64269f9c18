"""Load a user's model checkpoint safely and run it over a dataset in batches.

Three kinds of checkpoint are understood:

- **A Hugging Face transformers model folder** (it holds ``config.json``). With a tokenizer
  (``tokenizer.json``, ``vocab.txt`` or ``tokenizer_config.json``) it is a *text* model; with a
  ``preprocessor_config.json`` an *image* model. Everything is read from the folder
  (``local_files_only``); nothing is downloaded. ``model.safetensors`` is preferred, and a
  ``pytorch_model.bin`` is read with torch's restricted ``weights_only`` unpickler.
- **A TorchScript file** (``torch.jit.save``). TorchScript archives hold compiled code, not
  pickled Python objects, so loading one runs no Python code from the file.
- **A state dict** (``.pt``, ``.pth``, ``.bin``, ``.safetensors``) together with the
  architecture that it belongs to, ``"package.module:ClassName"``, optionally followed by the
  constructor's keyword arguments as JSON: ``"mypkg.nets:Classifier{\\"hidden\\": 64}"``.

Safety: pickle files can run arbitrary code while loading. They are read with
``torch.load(..., weights_only=True)``, which accepts tensors and plain containers only. A file
that needs more (a whole pickled ``nn.Module``, custom classes, or something hostile) is
refused with :class:`CheckpointError` unless the caller passes ``trust=True``: an operator's
setting, ``--trust-checkpoint`` on the command line, ``CARTOGRAPHER_TRUST_CHECKPOINTS=1`` for the
app (never a browser choice). ``trust=True`` also lets a transformers folder run the custom
modelling code it ships (``trust_remote_code``).

The architecture a user names is code too. It goes through
:func:`analytics.access.check_architecture`: it must be a ``torch.nn.Module`` subclass, checked
before anything is called, from a module that is already imported or that the operator allows
(``CARTOGRAPHER_ARCHITECTURES``, or ``trust``). Paths go through
:func:`analytics.access.resolve_data_path` (data roots, regular files, size cap).

What a model is fed
-------------------
- transformers text models: the tokenised texts (truncated to 256 tokens or the model's limit).
- transformers image models: the images, resized to the image processor's input size and
  normalised by that processor.
- TorchScript and state-dict models (``modality == "features"``): either images as a float32
  tensor of shape (B, 3, H, W) with values in [0, 1] and ``H == W == image_size`` (when run
  with ``image_paths``), or a float32 matrix of shape (B, d) (when run with ``features``: for a
  text dataset the caller passes sentence embeddings, for a table its standardised features).

Input gradients (for Variance of Gradients, :mod:`analytics.vog`)
------------------------------------------------------------------
:func:`run_checkpoint_gradients` also gives, for every example, the gradient of its gold-class
logit with respect to the model input, taken in eval mode: the float tensor itself for
TorchScript and state-dict models (pixels in [0, 1], or the feature vector); the processor's
normalised ``pixel_values`` for transformers image models; for transformers text models the
input token embeddings (the output of ``get_input_embeddings()``, fed as ``inputs_embeds``),
summed over the real (unmasked) token positions, so the gradient has the hidden size as its
dimension whatever the text's length. A model whose logits do not depend differentiably on its
input (one that casts it to integers, detaches it, or fails when it requires a gradient) gives
logits without gradients.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from analytics.access import AccessError, Policy, check_architecture, resolve_data_path
from analytics.device import default_device
from analytics.images import load_image_batch

__all__ = [
    "CheckpointError",
    "FORMATS",
    "LoadedModel",
    "MODALITIES",
    "OUTPUTS",
    "checkpoint_fingerprint",
    "load_checkpoint",
    "run_checkpoint",
    "run_checkpoint_gradients",
]

#: How a checkpoint was loaded.
FORMATS = ("transformers", "torchscript", "state_dict")
#: What a loaded model takes as input.
MODALITIES = ("text", "image", "features")
#: What :func:`run_checkpoint` can return.
OUTPUTS = ("embedding", "logits")

Progress = Callable[[float, str], None]

_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
_PROCESSOR_FILE = "preprocessor_config.json"
_MAX_TOKENS = 256
_DEFAULT_IMAGE_SIDE = 224  # for an image processor that states no size
# Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_ZIP_MAGIC = b"PK\x03\x04"
# How torch's weights-only unpickler names a class or function it refused to import.
_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_TRUST_HINT = ("Only if you trust where this file came from: ask the server's operator to set "
               "CARTOGRAPHER_TRUST_CHECKPOINTS=1 (app), or pass --trust-checkpoint on the command line.")


class CheckpointError(ValueError):
    """The checkpoint cannot be loaded or run; the message names the file and what to do."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for :func:`run_checkpoint`.

    Attributes
    ----------
    path : Path
        The file or folder it was loaded from.
    format : {"transformers", "torchscript", "state_dict"}
        How it was loaded. A whole pickled ``nn.Module`` (loaded with ``trust=True``) also
        reports ``"state_dict"``: it came through the same ``torch.load`` route.
    modality : {"text", "image", "features"}
        What it takes: texts, images, or (TorchScript and state-dict models) a tensor, which
        is either a (B, d) feature matrix or a (B, 3, image_size, image_size) image batch.
    model : torch.nn.Module
        In eval mode, on ``device``.
    device : torch.device
    preprocessor : object or None
        The tokenizer (text) or image processor (image) of a transformers model, else None.
    image_size : int or None
        Side length of the square images fed to a TorchScript or state-dict model; None for
        transformers models, whose image processor decides.
    """

    path: Path
    format: str
    modality: str
    model: torch.nn.Module
    device: torch.device
    preprocessor: object | None
    image_size: int | None


def checkpoint_fingerprint(path: str | Path, *, policy: Policy | None = None) -> str:
    """A short hex digest of a checkpoint's content, for cache keys.

    Parameters
    ----------
    path : str or Path
        A checkpoint file, or a folder (every file below it counts, by relative path and bytes).
    policy : Policy, optional
        The operator's rules for paths (data roots, regular files, size cap); by default
        :meth:`Policy.from_env`.

    Returns
    -------
    str
        20 hex characters of a SHA-256; it changes whenever any byte (or file name) changes.

    Raises
    ------
    CheckpointError
        The path is missing, or the operator's rules refuse it or a file in its folder.
    """
    target = _checked_path(path, policy)
    digest = hashlib.sha256()
    if target.is_file():
        _hash_file(target, digest)
    else:
        for file in _folder_files(target, path, policy):
            name = file.relative_to(target).as_posix().encode()
            digest.update(len(name).to_bytes(8, "little") + name)
            _hash_file(file, digest)
    return digest.hexdigest()[:20]


def _checked_path(path: str | Path, policy: Policy | None) -> Path:
    """``path`` resolved under the operator's rules; their refusal as a :class:`CheckpointError`."""
    try:
        return resolve_data_path(path, policy or Policy.from_env(), what="checkpoint")
    except AccessError as exc:
        raise CheckpointError(str(exc)) from None


def _folder_files(folder: Path, typed: str | Path, policy: Policy | None) -> list[Path]:
    """Every file below a checkpoint folder, each checked like the folder (a link inside it that
    leads out of the data roots, or to a device, is refused)."""
    files = sorted(p for p in folder.rglob("*") if not p.is_dir())
    for file in files:
        try:
            resolve_data_path(file, policy or Policy.from_env(), what="checkpoint file", allow_dir=False)
        except AccessError:
            shown = Path(typed) / file.relative_to(folder)
            raise CheckpointError(f"{shown}: this file in the checkpoint folder is not a regular file inside "
                                  "the data folders (or is over the size cap), so the folder cannot be "
                                  "used.") from None
    return files


def load_checkpoint(
    path: str | Path,
    *,
    architecture: str | None = None,
    trust: bool = False,
    device: torch.device | str | None = None,
    image_size: int = 32,
    policy: Policy | None = None,
) -> LoadedModel:
    """Load a transformers folder, a TorchScript file or a state dict, without running its code.

    Parameters
    ----------
    path : str or Path
        A transformers model folder, a TorchScript file, or a state-dict file.
    architecture : str, optional
        For a state dict: the model class, ``"package.module:ClassName"``, optionally followed
        by a JSON object of constructor keyword arguments. The module must be importable.
        Ignored for transformers folders and TorchScript files.
    trust : bool, default False
        Allow full unpickling (which can run arbitrary code from the file), a transformers
        folder's own modelling code, and importing the architecture's module. An operator's
        setting only (``--trust-checkpoint``, ``CARTOGRAPHER_TRUST_CHECKPOINTS``): never let a
        browser user set it.
    device : torch.device or str, optional
        Where to run; by default CUDA when available, else the CPU.
    image_size : int, default 32
        Side length of the images fed to a TorchScript or state-dict model.
    policy : Policy, optional
        The operator's rules: data roots and caps for the path, the allow-list of architectures
        (see :func:`analytics.access.check_architecture`). By default :meth:`Policy.from_env`.

    Returns
    -------
    LoadedModel

    Raises
    ------
    CheckpointError
        The path is missing, empty, corrupt or truncated, or outside the data roots; it needs
        trust; a state dict has no or the wrong architecture, or one the operator's rules refuse.
        The message names the file and what to do.
    """
    if image_size < 1:
        raise CheckpointError(f"{path}: image_size must be a positive number of pixels, got {image_size}.")
    policy = policy or Policy.from_env()
    target = _checked_path(path, policy)
    run_on = default_device(str(device)) if device is not None else default_device()
    if target.is_dir():
        _folder_files(target, path, policy)
        return _load_transformers(target, trust=trust, device=run_on)
    if target.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty. Save the checkpoint again and re-upload it.")
    if target.suffix.lower() == ".safetensors":
        weights = _read_safetensors(target)
    elif _is_torchscript(target):
        return _load_torchscript(target, device=run_on, image_size=image_size)
    else:
        weights = _read_torch_file(target, trust=trust)
    if isinstance(weights, torch.nn.Module):
        model = weights
    else:
        model = _build_architecture(target, architecture, _as_state_dict(target, weights), policy=policy,
                                    trust=trust)
    return LoadedModel(path=target, format="state_dict", modality="features",
                       model=model.to(run_on).eval(), device=run_on, preprocessor=None,
                       image_size=image_size)


def run_checkpoint(
    loaded: LoadedModel,
    *,
    texts: Sequence[str] | None = None,
    image_paths: Sequence[str | Path] | None = None,
    features: np.ndarray | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
    output: str = "embedding",
) -> np.ndarray:
    """Run a loaded model over texts, images or a feature matrix, in batches.

    Parameters
    ----------
    loaded : LoadedModel
    texts : sequence of str, optional
        For a transformers text model.
    image_paths : sequence of str or Path, optional
        For a transformers image model, or a TorchScript / state-dict model that takes images
        as (B, 3, image_size, image_size) floats in [0, 1]. Unreadable files become black images.
    features : ndarray of shape (n_examples, n_features), optional
        For a TorchScript / state-dict model; cast to float32.
    batch_size : int, default 64
    progress : callable, optional
        Called as ``progress(fraction_done, message)`` after every batch.
    output : {"embedding", "logits"}, default "embedding"
        For transformers models, "embedding" is the pooler output when the model has one, else
        the mean of the last hidden states over real tokens (text), tokens or patches (vision
        transformers) or spatial positions (convolutional models); a folder saved by
        sentence-transformers uses its own pooling (mean, CLS or max) and normalisation.
        "logits" needs a folder whose ``config.json`` names a ``...ForSequenceClassification``
        or ``...ForImageClassification`` architecture. For TorchScript and state-dict models
        both are the forward output (the first tensor of a tuple or dict), flattened per example.

    Returns
    -------
    ndarray of shape (n_examples, n_dims), dtype float32
        Row ``i`` belongs to input ``i``.

    Raises
    ------
    ValueError
        Not exactly one input was given, it is empty, or an option is out of range.
    CheckpointError
        The model does not take this kind of input, or its forward pass failed on it; the
        message names the checkpoint and the input shape.
    """
    kind, inputs = _checked_inputs(loaded, texts, image_paths, features, batch_size, output)
    if loaded.format == "transformers":
        pooling = _sentence_transformers_pooling(loaded.path) if loaded.modality == "text" else None
        step = functools.partial(_transformers_batch, loaded, output=output, pooling=pooling)
    else:
        step = functools.partial(_tensor_batch, loaded, kind=kind)

    chunks = []
    with torch.inference_mode():
        for start, stop in _batches(loaded, len(inputs), batch_size, progress):
            chunks.append(step(inputs[start:stop]))
    return np.concatenate(chunks, axis=0)


def run_checkpoint_gradients(
    loaded: LoadedModel,
    *,
    gold: np.ndarray,
    texts: Sequence[str] | None = None,
    image_paths: Sequence[str | Path] | None = None,
    features: np.ndarray | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
    reduce: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Logits of every example and the gradient of its gold logit with respect to the model input.

    One call per checkpoint gives S_t(i) = ∂ z_t(i)[y_i] / ∂ x_i for Variance of Gradients
    (Agarwal et al., CVPR 2022; :mod:`analytics.vog`). What x is for each kind of model: see the
    module docstring ("Input gradients"). A batch's gradients come from one backward pass of the
    sum of its gold logits, which is each example's own gradient because a model in eval mode
    treats the examples of a batch independently.

    Parameters
    ----------
    loaded : LoadedModel
    gold : ndarray of shape (n_examples,), int
        The class index whose logit is differentiated, per example.
    texts, image_paths, features, batch_size, progress
        As for :func:`run_checkpoint`.
    reduce : callable, optional
        Applied to each batch's gradients, (B, D) float32 → (B, D'), before they are kept, so a
        caller can bound memory (e.g. :func:`analytics.vog.reduce_gradients`).

    Returns
    -------
    logits : ndarray of shape (n_examples, n_classes), float32
    gradients : ndarray of shape (n_examples, D), float32, or None
        None when the model gives no input gradient; ``note`` says why.
    note : str or None

    Raises
    ------
    ValueError, CheckpointError
        As :func:`run_checkpoint` with ``output="logits"``; also when ``gold`` does not have one
        entry per input.
    """
    kind, inputs = _checked_inputs(loaded, texts, image_paths, features, batch_size, "logits")
    gold = np.asarray(gold, dtype=np.int64).reshape(-1)
    if len(gold) != len(inputs):
        raise ValueError(f"gold has {len(gold)} entries for {len(inputs)} inputs.")
    if loaded.format == "transformers":
        plain = functools.partial(_transformers_batch, loaded, output="logits", pooling=None)
        with_gradients = functools.partial(_transformers_gradient_batch, loaded)
    else:
        plain = functools.partial(_tensor_batch, loaded, kind=kind)
        with_gradients = functools.partial(_tensor_gradient_batch, loaded, kind=kind)
    logits, gradients, note = [], [], None
    for start, stop in _batches(loaded, len(inputs), batch_size, progress):
        batch = inputs[start:stop]
        batch_logits = batch_gradients = None
        if note is None:
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    batch_logits, batch_gradients = with_gradients(
                        batch, torch.from_numpy(gold[start:stop]).to(loaded.device))
            except CheckpointError as exc:  # e.g. a model that calls .numpy() on its input
                note = f"the model failed when its input required a gradient ({exc})"
            else:
                if batch_gradients is None:
                    note = (f"the logits of {loaded.path.name} do not depend differentiably on its "
                            "input (it may cast the input to integers or detach it), or a label index "
                            "is not among its outputs")
        if batch_logits is None:
            with torch.inference_mode():
                batch_logits = plain(batch)  # raises when the model fails on this input at all
        logits.append(batch_logits)
        if note is None:
            gradients.append(reduce(batch_gradients) if reduce is not None else batch_gradients)
    return (np.concatenate(logits, axis=0), None if note else np.concatenate(gradients, axis=0), note)


def _checked_inputs(loaded: LoadedModel, texts, image_paths, features, batch_size: int,
                    output: str) -> tuple[str, object]:
    """Which input was given, as a list (texts, image paths) or a float32 matrix (features)."""
    given = {name: value for name, value in
             (("texts", texts), ("image_paths", image_paths), ("features", features)) if value is not None}
    if len(given) != 1:
        raise ValueError(f"Pass exactly one of texts, image_paths or features (got {', '.join(given) or 'none'}).")
    if output not in OUTPUTS:
        raise ValueError(f"Unknown output '{output}'; use one of {', '.join(OUTPUTS)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    kind, inputs = next(iter(given.items()))
    if kind == "features":
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 2:
            raise ValueError(f"features must be a 2-D array (n_examples, n_features), got shape {inputs.shape}.")
    else:
        inputs = list(inputs)
    if len(inputs) == 0:
        raise ValueError(f"No {kind.replace('_', ' ')} to run the model on.")
    _check_input_kind(loaded, kind)
    if output == "logits" and loaded.format == "transformers" and not _has_classifier_head(loaded.model):
        raise CheckpointError(
            f"{loaded.path}: this model has no classification head, so it gives no logits "
            "(its config.json names no ...ForSequenceClassification or ...ForImageClassification "
            "architecture). Use output='embedding', or save the fine-tuned model with its head.")
    return kind, inputs


def _batches(loaded: LoadedModel, n_examples: int, batch_size: int, progress: Progress | None):
    """(start, stop) of each batch; reports progress after each one is done."""
    for start in range(0, n_examples, batch_size):
        stop = min(start + batch_size, n_examples)
        yield start, stop
        if progress is not None:
            progress(stop / n_examples, f"Running {loaded.path.name}: {stop:,}/{n_examples:,}")


# --- loading ---------------------------------------------------------------------------------

def _hash_file(path: Path, digest) -> None:
    digest.update(path.stat().st_size.to_bytes(8, "little"))
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive carries ``constants.pkl`` and compiled ``code/``; torch.save does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(name.split("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{name}" for name in names)


def _load_torchscript(path: Path, *, device: torch.device, image_size: int) -> LoadedModel:
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError with C++ context for any bad archive
        raise CheckpointError(
            f"{path}: looks like a TorchScript file but cannot be loaded ({_first_line(exc)}). "
            "It may be truncated or corrupt, or saved by a newer PyTorch; save it again with "
            "torch.jit.save.") from None
    return LoadedModel(path=path, format="torchscript", modality="features", model=model.eval(),
                       device=device, preprocessor=None, image_size=image_size)


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"{path}: reading .safetensors files needs the 'safetensors' package; "
                              "install it with pip install safetensors.") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError for a bad header or a short file
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)}). "
                              "It may be truncated or corrupt; save it again.") from None


def _read_torch_file(path: Path, *, trust: bool):
    """``torch.load`` with the restricted unpickler, unless the caller trusts the file."""
    with path.open("rb") as handle:
        head = handle.read(4)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if trust:
            raise CheckpointError(f"{path}: cannot be unpickled ({_first_line(exc)}). It may be "
                                  "corrupt, or need a Python class that cannot be imported here.") from None
        message = str(exc)
        blocked = _BLOCKED_GLOBAL.search(message)
        if blocked or _looks_like_framed_pickle(head):
            needs = f" (it refers to {blocked.group(1)})" if blocked else ""
            raise CheckpointError(
                f"{path}: this file holds more than weights{needs}: loading it needs full "
                "unpickling, which can run arbitrary code. It was not loaded. "
                f"{_TRUST_HINT} Better: save only the weights (model.state_dict()) or a TorchScript file."
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or it is corrupt. Save it again "
                              "with torch.save(model.state_dict(), ...) or torch.jit.save.") from None
    except Exception as exc:  # RuntimeError, EOFError, struct errors... for damaged files
        # AttributeError / ImportError: a trusted pickle naming a class that is not importable.
        if head == _ZIP_MAGIC:
            why = "the archive is truncated or corrupt"
        elif isinstance(exc, (AttributeError, ImportError)):
            why = f"it needs Python code that cannot be imported here: {_first_line(exc)}"
        else:
            why = "it is not a PyTorch checkpoint, or it is truncated or corrupt"
        if trust and _looks_like_pickle(head) and "magic number" in str(exc):
            return _read_plain_pickle(path)
        raise CheckpointError(f"{path}: cannot be loaded: {why}. Save it again with "
                              "torch.save(model.state_dict(), ...) or torch.jit.save.") from None


def _looks_like_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with the PROTO opcode (0x80) and the protocol number."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _looks_like_framed_pickle(head: bytes) -> bool:
    """A ``pickle.dump`` file of protocol 4 or 5, whose framing the weights-only reader refuses.

    torch.save itself writes protocol 2, so such a file is a plain pickle, not a damaged checkpoint.
    """
    return _looks_like_pickle(head) and head[1] >= 4


def _read_plain_pickle(path: Path):
    """A file written with ``pickle.dump`` rather than ``torch.save``; only called with trust."""
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 - the caller has said they trust this file
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be unpickled ({_first_line(exc)}).") from None


def _as_state_dict(path: Path, loaded) -> dict[str, torch.Tensor]:
    """The tensor mapping inside what was loaded (also when nested under e.g. ``"state_dict"``)."""
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict (a mapping "
                              "of parameter names to tensors) or a model. Save model.state_dict().")
    if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return dict(loaded)
    for key in _NESTED_STATE_KEYS:
        nested = loaded.get(key)
        if isinstance(nested, Mapping) and nested and all(isinstance(v, torch.Tensor) for v in nested.values()):
            return dict(nested)
    shown = ", ".join(repr(k) for k in list(loaded)[:5])
    raise CheckpointError(f"{path}: holds a dict ({shown}{', ...' if len(loaded) > 5 else ''}) but "
                          "not a state dict of tensors. Save model.state_dict() on its own.")


def _build_architecture(path: Path, architecture: str | None, state_dict: dict, *, policy: Policy,
                        trust: bool) -> torch.nn.Module:
    if not architecture:
        raise CheckpointError(
            f"{path}: is a state dict, which holds weights only, not the model's architecture. "
            'Name the model class as "package.module:ClassName" (optionally with JSON keyword '
            'arguments, "package.module:ClassName{\\"hidden\\": 64}"): the architecture field in '
            "the app, --architecture on the command line. Or export a TorchScript file instead.")
    try:  # the rules are checked before anything named by the user is imported or called
        model_class, kwargs = check_architecture(architecture, policy, trust=trust)
    except AccessError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        model = model_class(**kwargs)
    except Exception as exc:  # the user's constructor can raise anything
        raise CheckpointError(f"{path}: could not build {model_class.__name__}(**{kwargs}): "
                              f"{_first_line(exc)}") from None
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: its weights do not fit the architecture {architecture}: "
                              f"{_shorten(detail, 400)} Check the class and its arguments.") from None
    return model


def _load_transformers(folder: Path, *, trust: bool, device: torch.device) -> LoadedModel:
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder}: is a folder but not a Hugging Face model folder (it has no config.json). "
            "Pass a folder saved with save_pretrained, a TorchScript file, or a state-dict file.")
    has_tokenizer = any((folder / name).is_file() for name in _TOKENIZER_FILES)
    has_processor = (folder / _PROCESSOR_FILE).is_file()
    if has_tokenizer and has_processor:
        raise CheckpointError(f"{folder}: holds both a tokenizer and an image processor (a multimodal "
                              "model); only text or image models are supported.")
    if not (has_tokenizer or has_processor):
        raise CheckpointError(
            f"{folder}: has no tokenizer ({', '.join(_TOKENIZER_FILES)}) or image processor "
            f"({_PROCESSOR_FILE}), so its input is unknown. Save the tokenizer or image processor "
            "into the folder with save_pretrained.")
    try:
        import transformers
    except ImportError:
        raise CheckpointError(f"{folder}: loading a Hugging Face model folder needs the 'transformers' "
                              "package; install it with pip install transformers.") from None

    options = {"local_files_only": True, "trust_remote_code": trust}
    modality = "text" if has_tokenizer else "image"
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **options)
        if has_tokenizer:
            preprocessor = transformers.AutoTokenizer.from_pretrained(folder, **options)
            if preprocessor.pad_token is None and preprocessor.eos_token is not None:
                preprocessor.pad_token = preprocessor.eos_token  # e.g. GPT-2, which has no padding token
        else:
            preprocessor = transformers.AutoImageProcessor.from_pretrained(folder, **options)
    except Exception as exc:  # OSError, ValueError, KeyError for unknown model types...
        if "trust_remote_code" in str(exc):
            raise CheckpointError(f"{folder}: this model ships its own Python code, which would run "
                                  f"when it is loaded. It was not loaded. {_TRUST_HINT}") from None
        raise CheckpointError(f"{folder}: cannot read the model's configuration or "
                              f"{'tokenizer' if has_tokenizer else 'image processor'}: {_first_line(exc)}") from None

    head = "ForSequenceClassification" if has_tokenizer else "ForImageClassification"
    with_head = any(name.endswith(head) for name in (getattr(config, "architectures", None) or ()))
    auto_class = getattr(transformers, f"AutoModel{head}") if with_head else transformers.AutoModel
    safetensors = any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()
    try:
        model = auto_class.from_pretrained(folder, config=config, use_safetensors=safetensors or None,
                                           weights_only=not trust, **options)
    except pickle.UnpicklingError as exc:
        blocked = _BLOCKED_GLOBAL.search(str(exc))
        needs = f" (it refers to {blocked.group(1)})" if blocked else ""
        raise CheckpointError(
            f"{folder}: its pytorch_model.bin holds more than weights{needs}: loading it needs full "
            f"unpickling, which can run arbitrary code. It was not loaded. {_TRUST_HINT} Better: "
            "re-save the model with save_pretrained, which writes model.safetensors.") from None
    except Exception as exc:  # OSError for missing weights, RuntimeError for mismatched shapes
        raise CheckpointError(f"{folder}: cannot load the model weights: {_first_line(exc)}") from None
    return LoadedModel(path=folder, format="transformers", modality=modality,
                       model=model.to(device).eval(), device=device, preprocessor=preprocessor,
                       image_size=None)


# --- inference -------------------------------------------------------------------------------

def _check_input_kind(loaded: LoadedModel, kind: str) -> None:
    accepted = {"text": ("texts",), "image": ("image_paths",), "features": ("image_paths", "features")}
    if kind in accepted[loaded.modality]:
        return
    if loaded.modality == "features":
        hint = ("It takes tensors, not text: pass sentence embeddings as features, or use a "
                "transformers model folder with its tokenizer.")
    else:
        hint = f"It is a transformers {loaded.modality} model, so pass {accepted[loaded.modality][0]}."
    raise CheckpointError(f"{loaded.path}: cannot run this model on {kind.replace('_', ' ')}. {hint}")


def _has_classifier_head(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith(("ForSequenceClassification", "ForImageClassification"))


def _tensor_input(loaded: LoadedModel, batch, kind: str) -> torch.Tensor:
    """A batch as the float tensor a TorchScript or state-dict model takes, on its device."""
    if kind == "features":
        tensor = torch.from_numpy(np.ascontiguousarray(batch))
    else:
        pixels = load_image_batch(batch, size=loaded.image_size)  # (B, H, W, 3) uint8
        tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor.to(loaded.device)


def _tensor_batch(loaded: LoadedModel, batch, *, kind: str) -> np.ndarray:
    """One batch through a TorchScript or state-dict model."""
    tensor = _tensor_input(loaded, batch, kind)
    result = _forward(loaded, lambda: loaded.model(tensor), tuple(tensor.shape))
    return _first_tensor(loaded, result, tuple(tensor.shape)).float().cpu().numpy()


def _tensor_gradient_batch(loaded: LoadedModel, batch, gold: torch.Tensor, *, kind: str):
    """Logits and gold-logit input gradients, (B, K) and (B, D) float32 (or None), of one batch."""
    tensor = _tensor_input(loaded, batch, kind).requires_grad_()
    shape = tuple(tensor.shape)
    logits = _first_tensor(loaded, _forward(loaded, lambda: loaded.model(tensor), shape), shape)
    gradients = _gold_gradient(logits, gold, tensor)
    return (logits.detach().float().cpu().numpy(),
            None if gradients is None else gradients.reshape(shape[0], -1).float().cpu().numpy())


def _transformers_gradient_batch(loaded: LoadedModel, batch, gold: torch.Tensor):
    """As :func:`_tensor_gradient_batch` for a transformers classifier: the gradient with respect
    to ``pixel_values``, or to the input token embeddings summed over the unmasked positions."""
    model = loaded.model
    inputs, shape = _transformers_inputs(loaded, batch)
    if loaded.modality == "text":
        embeddings = model.get_input_embeddings()
        if embeddings is None:
            return _transformers_batch(loaded, batch, output="logits", pooling=None), None
        wrt = embeddings(inputs.pop("input_ids")).detach().requires_grad_()
        inputs["inputs_embeds"] = wrt
    else:
        wrt = inputs["pixel_values"].requires_grad_()
    logits = _forward(loaded, lambda: model(**_accepted_inputs(model, inputs)), shape).logits
    gradients = _gold_gradient(logits, gold, wrt)
    if gradients is not None and loaded.modality == "text":
        mask = inputs.get("attention_mask")
        gradients = (gradients if mask is None else gradients * mask.unsqueeze(-1).to(gradients.dtype)).sum(dim=1)
    return (logits.detach().float().cpu().numpy(),
            None if gradients is None else gradients.reshape(shape[0], -1).float().cpu().numpy())


def _gold_gradient(logits: torch.Tensor, gold: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor | None:
    """∂ Σ_i logits[i, gold[i]] / ∂ wrt, or None when the logits do not depend on ``wrt`` through
    differentiable operations or a gold index is beyond the logits."""
    if logits.dim() != 2 or not logits.requires_grad or int(gold.min()) < 0 or int(gold.max()) >= logits.shape[1]:
        return None
    picked = logits.gather(1, gold.to(logits.device).unsqueeze(1)).sum()
    try:
        (gradients,) = torch.autograd.grad(picked, wrt, allow_unused=True)
    except RuntimeError:  # an operation without a derivative in the user's model
        return None
    return gradients


def _transformers_inputs(loaded: LoadedModel, batch) -> tuple[dict, tuple]:
    """A batch tokenised (text) or preprocessed (images) for a transformers model, and its shape."""
    if loaded.modality == "text":
        encoded = loaded.preprocessor(list(batch), truncation=True, padding=True, return_tensors="pt",
                                      max_length=_max_tokens(loaded))
        inputs = {name: tensor.to(loaded.device) for name, tensor in encoded.items()}
        return inputs, tuple(inputs["input_ids"].shape)
    side = _processor_side(loaded.preprocessor)
    images = list(load_image_batch(batch, size=side))
    pixels = loaded.preprocessor(images=images, return_tensors="pt")["pixel_values"]
    return {"pixel_values": pixels.to(loaded.device, dtype=loaded.model.dtype)}, tuple(pixels.shape)


def _transformers_batch(loaded: LoadedModel, batch, *, output: str, pooling: dict | None) -> np.ndarray:
    """One batch through a transformers model: tokenise or preprocess, forward, pool."""
    model = loaded.model
    inputs, shape = _transformers_inputs(loaded, batch)
    if output == "logits":
        result = _forward(loaded, lambda: model(**_accepted_inputs(model, inputs)), shape)
        return result.logits.float().cpu().numpy()

    base = model.base_model
    result = _forward(loaded, lambda: base(**_accepted_inputs(base, inputs)), shape)
    hidden = result.last_hidden_state
    mask = inputs.get("attention_mask")
    if pooling is not None:
        pooled = _sentence_transformers_pool(hidden, mask, pooling)
    elif getattr(result, "pooler_output", None) is not None:
        pooled = result.pooler_output
    elif hidden.dim() == 4:  # convolutional: (B, C, H, W)
        pooled = hidden.mean(dim=(2, 3))
    elif mask is not None:
        pooled = _masked_mean(hidden, mask)
    else:
        pooled = hidden.mean(dim=1)
    return pooled.reshape(pooled.shape[0], -1).float().cpu().numpy()


def _forward(loaded: LoadedModel, call, shape: tuple):
    try:
        return call()
    except torch.cuda.OutOfMemoryError:
        raise CheckpointError(f"{loaded.path}: ran out of GPU memory on a batch of shape {shape}; "
                              "lower the batch size.") from None
    except Exception as exc:  # the user's model may raise anything on an input it does not take
        raise CheckpointError(f"{loaded.path}: the model failed on input of shape {shape} "
                              f"({_shorten(' '.join(str(exc).split()), 300)}). Check that it takes "
                              f"{_expected_input(loaded)}.") from None


def _expected_input(loaded: LoadedModel) -> str:
    if loaded.modality == "features":
        return (f"a float32 (batch, n_features) matrix, or (batch, 3, {loaded.image_size}, "
                f"{loaded.image_size}) images in [0, 1] (set the image size to match the model)")
    return "this kind of input"


def _first_tensor(loaded: LoadedModel, result, shape: tuple) -> torch.Tensor:
    """The model's output as a (B, -1) tensor: the first tensor of a tuple, list or dict."""
    if isinstance(result, Mapping):
        result = next(iter(result.values()), None)
    elif isinstance(result, (tuple, list)):
        result = result[0] if result else None
    if not isinstance(result, torch.Tensor):
        raise CheckpointError(f"{loaded.path}: on input of shape {shape} the model returned "
                              f"{type(result).__name__}, not a tensor.")
    if result.dim() == 0 or result.shape[0] != shape[0]:
        raise CheckpointError(f"{loaded.path}: on input of shape {shape} the model returned shape "
                              f"{tuple(result.shape)}, not one row per example.")
    return result.reshape(shape[0], -1)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, D) over the positions where ``mask`` (B, L) is 1."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _sentence_transformers_pool(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: dict) -> torch.Tensor:
    if mask is None:
        mask = torch.ones(hidden.shape[:2], device=hidden.device)
    if pooling.get("pooling_mode_cls_token"):
        pooled = hidden[:, 0]
    elif pooling.get("pooling_mode_max_tokens"):
        pooled = hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).amax(dim=1)
    else:
        pooled = _masked_mean(hidden, mask)
    if pooling.get("normalize"):
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled


def _sentence_transformers_pooling(folder: Path) -> dict | None:
    """The Pooling (and Normalize) modules of a folder saved by sentence-transformers, if any.

    Such models are trained for their own pooling (usually the token mean); the BERT pooler
    they may carry is untrained for similarity, so it must not be used.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text())
        pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
        config = json.loads((folder / pooling.get("path", "") / "config.json").read_text())
    except (OSError, ValueError, StopIteration, AttributeError, TypeError):
        return None
    config["normalize"] = any(m.get("type", "").endswith("Normalize") for m in modules)
    return config


def _accepted_inputs(model: torch.nn.Module, inputs: dict) -> dict:
    """``inputs`` less those ``model.forward`` does not take (tokenizer extras like token_type_ids)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return inputs
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return inputs
    names = {p.name for p in parameters}
    return {name: value for name, value in inputs.items() if name in names}


def _max_tokens(loaded: LoadedModel) -> int:
    limits = [_MAX_TOKENS, getattr(loaded.preprocessor, "model_max_length", None),
              getattr(loaded.model.config, "max_position_embeddings", None)]
    return min(int(limit) for limit in limits if isinstance(limit, (int, float)) and limit > 0)


def _processor_side(processor) -> int:
    """The square side to read images at before the processor resizes and crops them."""
    sides = []
    for attribute in ("size", "crop_size"):
        size = getattr(processor, attribute, None)
        if size is None:
            continue
        if isinstance(size, int):
            sides.append(size)
            continue
        getter = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
        sides.extend(int(v) for v in (getter("height"), getter("width"), getter("shortest_edge")) if v)
    return max(sides) if sides else _DEFAULT_IMAGE_SIDE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _shorten(text[0] if text else type(exc).__name__, 300)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
