"""The workspace: a folder of computed artefacts keyed by dataset fingerprint and parameters.

Layout: ``<root>/<fingerprint>/<stage>/<params-key>.<ext>`` plus a ``.meta.json`` beside each
artefact holding its SHA-256, size and parameters. The artefact is written first, then its
meta file, each to a temporary file that is renamed into place, so a reader sees either a
complete entry or none. An entry whose bytes do not match its meta, or that cannot be parsed,
is treated as absent: it is removed and recomputed, never trusted.

A result made of several files (a kNN graph's indices, distances and method) is one entry of
several files under the same parameters, each an entry as above, and an info file
(``<stage>_info``) written last (:meth:`Workspace.save_entry`): the entry is read back only when
its info file and every file it names are there and intact (:meth:`Workspace.load_entry`), so a
result stopped half-way is computed again rather than read in part.

The root is ``./workspace`` unless the ``CARTOGRAPHER_WORKSPACE`` environment variable names
another folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, TypeVar

import numpy as np
import pandas as pd

__all__ = [
    "WORKSPACE_ENV",
    "Workspace",
    "CacheEntry",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "file_sha256",
    "params_key",
    "default_root",
]

WORKSPACE_ENV = "CARTOGRAPHER_WORKSPACE"
log = logging.getLogger(__name__)
T = TypeVar("T")


def default_root() -> Path:
    """``$CARTOGRAPHER_WORKSPACE`` or ``./workspace``."""
    return Path(os.environ.get(WORKSPACE_ENV) or "workspace").expanduser()


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place, so
    readers see the old file or the new one, never a part. Large arrays stream to disk rather
    than being copied into memory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # os.open with 0o666 honours the umask (mkstemp would make the file private to its owner,
    # which breaks a workspace shared by a team).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(data))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def params_key(params: dict[str, Any]) -> str:
    """A short stable hash of JSON-able parameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_parquet(value: pd.DataFrame, handle: BinaryIO) -> None:
    value.to_parquet(handle, index=False)


# Per format: (extension, write to a binary handle, read from a path).
_FORMATS: dict[str, tuple[str, Callable[[Any, BinaryIO], None], Callable[[Path], Any]]] = {
    "npy": ("npy", lambda v, h: np.save(h, np.asarray(v), allow_pickle=False),
            lambda p: np.load(p, allow_pickle=False)),
    "parquet": ("parquet", _write_parquet, lambda p: pd.read_parquet(p)),
    "json": ("json", lambda v, h: h.write(json.dumps(v, indent=1, default=str).encode()),
             lambda p: json.loads(Path(p).read_bytes())),
}


@dataclass(frozen=True)
class CacheEntry:
    """A multi-file cache entry read back by :meth:`Workspace.load_entry`.

    Attributes
    ----------
    info : dict
        The entry's info file.
    files : dict
        Each file's value by its stage name (ndarray, DataFrame or JSON-able, per its format).
    """

    info: dict
    files: dict[str, Any]


@dataclass(frozen=True)
class Workspace:
    """Artefact cache rooted at ``root``."""

    root: Path

    @classmethod
    def default(cls) -> "Workspace":
        return cls(default_root())

    def entry_path(self, fingerprint: str, stage: str, params: dict[str, Any], fmt: str) -> Path:
        extension = _FORMATS[fmt][0]
        return Path(self.root) / fingerprint / stage / f"{params_key(params)}.{extension}"

    def save(self, fingerprint: str, stage: str, params: dict[str, Any], value: Any, *, fmt: str) -> Path:
        """Store ``value`` (ndarray for "npy", DataFrame for "parquet", JSON-able for "json")."""
        path = self.entry_path(fingerprint, stage, params, fmt)
        atomic_write(path, lambda handle: _FORMATS[fmt][1](value, handle))
        meta = {"sha256": file_sha256(path), "size": path.stat().st_size,
                "stage": stage, "params": params, "format": fmt}
        atomic_write_text(_meta_path(path), json.dumps(meta, indent=1, default=str))
        return path

    def load(self, fingerprint: str, stage: str, params: dict[str, Any], *, fmt: str) -> Any | None:
        """The stored value, or None when the entry is absent, partial or corrupt."""
        path = self.entry_path(fingerprint, stage, params, fmt)
        meta_path = _meta_path(path)
        if not path.exists() or not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if path.stat().st_size != meta["size"] or file_sha256(path) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            return _FORMATS[fmt][2](path)
        except Exception as exc:  # any failure to read back means: do not trust, recompute
            log.warning("Discarding corrupt cache entry %s (%s)", path, exc)
            path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    def cached(
        self, fingerprint: str, stage: str, params: dict[str, Any], compute: Callable[[], T], *, fmt: str
    ) -> T:
        """Load the entry if it is intact, otherwise ``compute()`` it, store it and return it."""
        value = self.load(fingerprint, stage, params, fmt=fmt)
        if value is None:
            value = compute()
            self.save(fingerprint, stage, params, value, fmt=fmt)
        return value

    def save_entry(self, fingerprint: str, stage: str, params: dict[str, Any],
                   files: Mapping[str, tuple[Any, str]], info: dict, *, info_name: str = "info") -> None:
        """Store a result of several files as one entry: every file, then the info file last.

        Parameters
        ----------
        files : mapping of str to (value, format)
            Each file by its stage name (e.g. ``"knn_indices"``), with its value and format as
            for :meth:`save`. A value of None is not stored (a part this result lacks; the info
            says so, see :meth:`load_entry`).
        info : dict
            JSON-able; stored as ``<stage>_<info_name>``, after the files, so its presence says
            that they are complete.
        """
        for name, (value, fmt) in files.items():
            if value is not None:
                self.save(fingerprint, name, params, value, fmt=fmt)
        self.save(fingerprint, f"{stage}_{info_name}", params, info, fmt="json")

    def load_entry(self, fingerprint: str, stage: str, params: dict[str, Any],
                   files: Mapping[str, str] | Callable[[dict], Mapping[str, str]], *,
                   info_name: str = "info") -> CacheEntry | None:
        """The entry :meth:`save_entry` stored, or None unless its info file and every file are
        there and intact.

        Parameters
        ----------
        files : mapping of str to str, or callable
            The format of each file by its stage name; or a function of the info that gives
            them, for an entry whose parts depend on it (a file stored only when the info says
            so).
        """
        info = self.load(fingerprint, f"{stage}_{info_name}", params, fmt="json")
        if info is None:
            return None
        expected = files(info) if callable(files) else files
        values = {}
        for name, fmt in expected.items():
            values[name] = self.load(fingerprint, name, params, fmt=fmt)
            if values[name] is None:
                return None
        return CacheEntry(info=info, files=values)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")
