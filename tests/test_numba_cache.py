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


def _child(script: str, workspace: Path) -> dict:
    """The last line ``script`` prints (JSON), run in a new process with ``workspace``."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["CARTOGRAPHER_WORKSPACE"] = str(workspace)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_compiled_code_from_the_workspace(tmp_path):
    first = _child(SCRIPT, tmp_path)
    assert first["finite"] and first["hits"] == 0 and first["misses"] > 0
    cached = list((tmp_path / "numba-cache").rglob("*.nbc"))
    assert cached, "no compiled code was written to <workspace>/numba-cache"
    second = _child(SCRIPT, tmp_path)
    assert second["finite"]
    # everything the first process compiled and could cache is loaded, not compiled again
    assert second["hits"] > 0
    assert second["misses"] < first["misses"] / 4


PREWARM = """
import json
from analytics.numba_cache import compiled, prewarm
options = dict(metric="cosine", n_neighbors=16, seed=None, init="spectral")
before = compiled()
process = prewarm(**options)
ok = process.wait(timeout=600)
print(json.dumps({"before": before, "ok": ok, "after": compiled(), "again": prewarm(**options) is None}))
"""

# The analysis's own layout: other data (more points, other dimensions), the same options.
LAYOUT = """
import json
import numpy as np
from analytics.neighbors import build_knn
from analytics.numba_cache import _dispatchers, cache_stats
from analytics.projection import project_umap

x = np.random.default_rng(1).normal(size=(6000, 32)).astype(np.float32)
graph = build_knn(x, k=15, metric="cosine")
coords = project_umap(x, knn=graph, n_neighbors=16, metric="cosine", n_epochs=10)
layout = [d for d in _dispatchers() if d.py_func.__name__ == "_optimize_layout_euclidean_single_epoch"]
print(json.dumps({**cache_stats(), "finite": bool(np.isfinite(coords).all()),
                  "layout_hits": sum(sum(d.stats.cache_hits.values()) for d in layout),
                  "layout_misses": sum(sum(d.stats.cache_misses.values()) for d in layout)}))
"""


def test_a_second_process_compiles_the_umap_layout_ahead_for_the_analysis(tmp_path):
    warmed = _child(PREWARM, tmp_path)
    assert warmed == {"before": False, "ok": True, "after": True, "again": True}  # once per cache
    used = _child(LAYOUT, tmp_path)
    assert used["finite"] and used["layout_hits"] >= 1 and used["layout_misses"] == 0 and used["hits"] >= 20
    # the layout loaded, not compiled: the process compiled no more than one that runs after it
    again = _child(LAYOUT, tmp_path)
    assert used["misses"] == again["misses"] and used["hits"] == again["hits"]


def test_the_analysis_compiles_the_layout_ahead_while_nn_descent_runs(monkeypatch, tmp_path):
    import numpy as np
    import pandas as pd

    from analytics import pipeline
    from analytics.analysis_config import AnalysisConfig
    from analytics.datasets import load_dataset
    from analytics.embeddings import EmbeddingSpec

    calls: list = []

    class Fake:
        def running(self) -> bool:
            return True

        def wait(self, timeout: float = 600.0) -> bool:
            calls.append("wait")
            return True

    def fake_prewarm(**options):
        calls.append(options)
        return Fake()

    stages: list = []
    monkeypatch.setattr(pipeline, "prewarm", fake_prewarm)
    exact = pipeline.build_knn  # the graph itself exactly (this test is about the order of things)
    monkeypatch.setattr(pipeline, "build_knn", lambda vectors, **options: calls.append("graph") or exact(
        vectors, **{**options, "exact_max": 10**6}))
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(400)], "label": rng.choice(["a", "b"], 400),
                          **{f"f{j}": rng.normal(size=400) for j in range(6)}})
    frame.to_csv(tmp_path / "prewarm.csv", index=False)
    dataset = load_dataset(tmp_path / "prewarm.csv")
    tabular = EmbeddingSpec(source="tabular")
    pipeline.run_analysis(dataset, AnalysisConfig(embedding=tabular, scores=False, issues=None, clusters=None))
    assert calls == ["graph"]  # 400 points: an exact graph in a moment, nothing to overlap
    calls.clear()
    config = AnalysisConfig(embedding=tabular, scores=False, issues=None, clusters=None, exact_knn_max=100, seed=3)
    pipeline.run_analysis(dataset, config, progress=lambda stage, fraction, message: stages.append((stage, message)))
    assert calls == [{"metric": config.embedding.metric, "n_neighbors": config.k + 1, "seed": 3, "init": "spectral",
                      }, "graph", "wait"]  # started before the graph, awaited before the layout
    assert any("Waiting for the compiled code" in message for stage, message in stages if stage == "umap")
