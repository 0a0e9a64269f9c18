"""Compiled numba code is cached in the workspace: a second process loads it instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A small UMAP layout on an exact kNN graph: compiles umap-learn's graph and layout functions.
SCRIPT = """
import json
import numpy as np
from analytics.neighbors import build_knn
from analytics.numba_cache import cache_stats
from analytics.projection import project_umap

x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
graph = build_knn(x, k=10, metric="euclidean")
coords = project_umap(x, knn=graph, n_neighbors=11, metric="euclidean", n_epochs=10, seed=0)
print(json.dumps({**cache_stats(), "finite": bool(np.isfinite(coords).all())}))
"""


def _run(workspace: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["CARTOGRAPHER_WORKSPACE"] = str(workspace)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_compiled_code_from_the_workspace(tmp_path):
    first = _run(tmp_path)
    assert first["finite"] and first["hits"] == 0 and first["misses"] > 0
    cached = list((tmp_path / "numba-cache").rglob("*.nbc"))
    assert cached, "no compiled code was written to <workspace>/numba-cache"
    second = _run(tmp_path)
    assert second["finite"]
    # everything the first process compiled and could cache is loaded, not compiled again
    assert second["hits"] > 0
    assert second["misses"] < first["misses"] / 4
