"""Child process of ``bench/map_speed.py``: numba warm-up, then one timed analysis run.

Prints progress to stderr and, last, one line ``RESULT {json}`` to stdout with the warm-up
time, the dataset load time, the wall time of ``run_analysis``, the manifest's per-stage
timings and the kNN method and recall. The parent measures this process's peak memory.

The warm-up runs the same numba code paths as the timed run, on a small synthetic set: the
pynndescent index the kNN stage builds above ``exact_knn_max``, UMAP with a precomputed graph,
and (with ``--warmup-transform``, for runs above ``umap_fit_max``) UMAP fitted on a sample with
the other points placed by ``transform``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path


def warm_up(dims: int, *, transform: bool) -> float:
    """Compile the numba functions of kNN and UMAP on 6,000 synthetic points; seconds taken."""
    from analytics.neighbors import build_knn
    from analytics.projection import project_umap
    from map_speed import ClusterModel

    started = time.perf_counter()
    vectors, _ = ClusterModel(dims, seed=12345).chunk(0, 6000, 1)
    graph = build_knn(vectors, k=15, exact_max=0)  # forces NN-descent, as above exact_knn_max
    project_umap(vectors, knn=graph, n_neighbors=16)
    if transform:  # fit on a sample of >= 4096 points (UMAP's own NN-descent) + transform
        project_umap(vectors, n_neighbors=16, fit_max=5000, fit_sample=4500)
    return time.perf_counter() - started


class StagePeaks:
    """Samples this process's RSS every 0.1 s and keeps the highest per stage (the stage named
    by the last progress report), to find which stage sets the peak."""

    def __init__(self, interval: float = 0.1):
        import threading

        import psutil

        self.stage = "load"
        self.peaks: dict[str, int] = {}
        self._process = psutil.Process()
        self._stopped = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            rss = self._process.memory_info().rss
            if rss > self.peaks.get(self.stage, 0):
                self.peaks[self.stage] = rss

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workspace", default=None, help="fresh workspace folder (default: a temp dir)")
    parser.add_argument("--warmup-transform", action="store_true")
    parser.add_argument("--with-scores", action="store_true", help="also run dynamics and scores")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    started = time.perf_counter()
    import umap  # noqa: F401  (import cost is not part of the run)

    from analytics.datasets import load_dataset
    from analytics.embeddings import EmbeddingSpec
    from analytics.pipeline import AnalysisConfig, run_analysis
    from analytics.workspace import Workspace
    import_s = time.perf_counter() - started

    import numpy as np

    dims = int(np.load(args.embeddings, mmap_mode="r").shape[1])
    print(f"[bench] numba warm-up ({dims}-d)", file=sys.stderr, flush=True)
    warmup_s = warm_up(dims, transform=args.warmup_transform)
    print(f"[bench] warm-up done in {warmup_s:.1f} s", file=sys.stderr, flush=True)
    warm_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    sampler = StagePeaks()

    def progress(stage: str, fraction: float, message: str) -> None:
        sampler.stage = stage
        if fraction in (0.0, 1.0):
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    workspace_dir = args.workspace or tempfile.mkdtemp(prefix="cartographer-bench-")
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    load_s = time.perf_counter() - started
    # The map benchmark times the map (kNN, projections, artefacts); dynamics and scores have
    # their own targets and are left out unless asked for.
    config = AnalysisConfig(embedding=EmbeddingSpec(source="file", path=args.embeddings),
                            scores=args.with_scores)
    started = time.perf_counter()
    run = run_analysis(dataset, config, out_dir=args.out, workspace=Workspace(Path(workspace_dir)),
                       progress=progress)
    run_s = time.perf_counter() - started
    sampler.stop()
    manifest = run.manifest
    report = {
        "n": dataset.n_examples,
        "dims": dims,
        "import_s": round(import_s, 3),
        "numba_warmup_s": round(warmup_s, 3),
        "load_s": round(load_s, 3),
        "run_s": round(run_s, 3),
        "ready_s": round(load_s + run_s, 3),
        "timings_s": manifest["timings_s"],
        "knn_method": manifest["neighbors"]["method"],
        "knn_recall": manifest["neighbors"]["recall"],
        "knn_k": manifest["neighbors"]["k"],
        "config": manifest["config"],
        "versions": manifest["versions"],
        "artefact_bytes": {name: info["bytes"] for name, info in manifest["artefacts"].items()},
        "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_after_warmup_bytes": warm_rss,
        "stage_peak_rss_bytes": sampler.peaks,
    }
    print("RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
