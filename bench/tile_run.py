"""A large run folder from a smaller one: every example repeated ``k`` times (ids suffixed
``-0`` … ``-{k-1}``), the arrays tiled to match, the manifest's size and checksums rewritten.

The app's pages do work in proportion to the number of rows, scores and classes, not to the
values, so a 100k analysis tiled ten times stands in for a 1M analysis when timing the app
(`bench/app_scale.py`, `bench/hardness_pages.py`) without an hour of analysis on a small machine.
The run's summaries (clusters, slices, score agreement, quantiles, seed stability) are copied:
repeating every row k times changes none of them (ranks of repeated values tie k-fold, and
Spearman's rho, quantiles and per-seed agreement are the same).

    .venv/bin/python bench/tile_run.py RUN_100K RUN_1M 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.workspace import atomic_write_text, file_sha256  # noqa: E402

_TILED_BY_ROW = ("embeddings.npy", "heldout_probs.npy")


def tile_run(source: Path, target: Path, k: int) -> int:
    """Write the tiled copy of run folder ``source`` to ``target``; returns its number of rows."""
    manifest = json.loads((source / "manifest.json").read_text())
    target.mkdir(parents=True, exist_ok=True)
    examples = pd.read_parquet(source / "examples.parquet")
    n = len(examples)
    copies = [examples.assign(id=examples["id"].astype(str) + f"-{i}") for i in range(k)]
    pd.concat(copies, ignore_index=True).to_parquet(target / "examples.parquet", index=False)
    for name in _TILED_BY_ROW:
        if (source / name).exists():
            np.save(target / name, np.tile(np.load(source / name), (k, 1)))
    if (source / "dynamics.npy").exists():  # (seeds, epochs, n, classes): examples on axis 2
        np.save(target / "dynamics.npy", np.concatenate([np.load(source / "dynamics.npy")] * k, axis=2))
    with np.load(source / "neighbors.npz") as graph:  # each copy's neighbours are in its own copy
        indices, distances = graph["indices"], graph["distances"]
    np.savez(target / "neighbors.npz", indices=np.concatenate([indices + i * n for i in range(k)]).astype(np.int32),
             distances=np.tile(distances, (k, 1)))
    done = {"manifest.json", "examples.parquet", "dynamics.npy", "neighbors.npz", *_TILED_BY_ROW}
    for file in source.iterdir():
        if file.is_file() and file.name not in done:
            shutil.copy(file, target / file.name)
    manifest["dataset"]["n_examples"] = n * k
    manifest["dataset"]["fingerprint"] += f"x{k}"
    manifest["dataset"]["name"] = f"tiled{k}-{manifest['dataset']['name']}"
    manifest["artefacts"] = {file.name: {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
                             for file in sorted(target.iterdir()) if file.name != "manifest.json"}
    atomic_write_text(target / "manifest.json", json.dumps(manifest, indent=2))
    return n * k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a run folder (cartographer analyze --out)")
    parser.add_argument("target", type=Path, help="the folder for the tiled run")
    parser.add_argument("k", type=int, help="how many times each example is repeated")
    args = parser.parse_args()
    print(f"{tile_run(args.source, args.target, args.k):,} rows written to {args.target}")


if __name__ == "__main__":
    main()
