"""Where the scatter's built JavaScript lives, and whether it was built from the sources here.

The bundle ships built (``frontend/build``), so the app runs without Node. ``npm run build``
records the SHA-256 of the sources it was built from in ``build/SOURCES.sha256``;
:func:`sources_digest` computes the same over the files in the repository (the list and the
hashing are those of ``frontend/build.mjs``), and a test compares the two.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["BUILD_DIR", "FRONTEND_DIR", "built_digest", "sources_digest"]

FRONTEND_DIR = Path(__file__).resolve().parent / "frontend"
BUILD_DIR = FRONTEND_DIR / "build"
BUILD_INPUTS = ("build.mjs", "package.json", "package-lock.json")


def sources_digest(frontend: Path = FRONTEND_DIR) -> str:
    """SHA-256 over every file of ``src/`` (sorted by name) and the build inputs: each file's
    path relative to ``frontend``, a newline, then its bytes."""
    names = [f"src/{path.name}" for path in sorted((frontend / "src").iterdir(), key=lambda p: p.name)
             if path.is_file()]
    digest = hashlib.sha256()
    for name in [*names, *BUILD_INPUTS]:
        digest.update(f"{name}\n".encode())
        digest.update((frontend / name).read_bytes())
    return digest.hexdigest()


def built_digest(build: Path = BUILD_DIR) -> str:
    """The digest recorded by the last ``npm run build``."""
    return (build / "SOURCES.sha256").read_text().strip()
