"""Stages computed ahead, in a second process, while the analysis compiles NN-descent.

A cold ``cartographer analyze`` (empty numba cache) spends its first 40 s or so at 100k
compiling pynndescent, on one core: on a 2-core machine the other core idles for about 30 of
those seconds (umap-learn's layout compiles there for about 8, :mod:`analytics.numba_prewarm`).
Two stages need nothing but the embeddings and the labels, so :func:`start` computes them
there, each in a second process at a lower priority, which reads the embeddings the run has just
stored in the workspace and stores its stage's entry where the stage looks for it:

- ``"clusters"``: the k-means clusters (:func:`store_clusters`);
- ``"dynamics"``: the probe's training dynamics, and under the cross-fit scheme its held-out
  probabilities (:func:`analytics.pipeline.train_ahead`).

The stage then waits for its process and loads the entry instead of computing it. The result is
the one the stage would compute itself: the same functions on the same stored embeddings, the
k-means on one thread as always, the probe on as many torch threads as the analysis's process
would use (its OpenMP threads sleep instead of spinning while they wait, which changes their
speed when they share a core, not their arithmetic). When the second process fails or is
stopped, the stage computes its result as before.

What a process is asked to do reaches it as a pickle on its standard input, from the analysis
that started it (it never passes through a file).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from analytics.clusters import ClusterConfig, Clustering, cluster_embeddings
from analytics.numba_cache import Prewarm
from analytics.workspace import Workspace

__all__ = ["TASKS", "start", "store_clusters", "main"]

TASKS = ("clusters", "dynamics")
NICENESS = 10  # below the analysis: it takes an idle core, not the compiler's


def store_clusters(workspace: Workspace, fingerprint: str, params: dict, vectors: np.ndarray,
                   config: ClusterConfig, metric: str, coords: np.ndarray | None = None,
                   progress: Callable[[float, str], None] | None = None) -> Clustering:
    """Cluster ``vectors`` (:func:`analytics.clusters.cluster_embeddings`) and store the result
    as the workspace's clusters entry under ``params``: what the clusters stage and the second
    process both do."""
    clustering = cluster_embeddings(vectors, config=config, metric=metric, coords=coords, progress=progress)
    workspace.save_entry(fingerprint, "clusters", params,
                         {"clusters": (np.stack([clustering.coarse, clustering.fine]), "npy")},
                         clustering.to_meta())
    return clustering


def start(task: str, request: dict) -> Prewarm | None:
    """Start ``task`` (one of :data:`TASKS`) in a second process; None when it does not start.
    :meth:`Prewarm.wait` before loading what it stores.

    ``request``: for ``"clusters"`` the workspace, fingerprint, embedding_params, params, config
    (:class:`ClusterConfig`) and metric; for ``"dynamics"`` the run (the pipeline's inputs, with
    the dataset's labels only) and threads (torch's, or None for its default).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
           "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        process = subprocess.Popen([sys.executable, "-m", "analytics.ahead"], env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with process.stdin:
            pickle.dump((task, {**request, "parent": os.getpid()}), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    except (OSError, pickle.PicklingError):
        return None
    return Prewarm(process)


def _leave_with(parent: int) -> None:
    """Stop this process when the analysis that started it has gone (finished, failed or was
    stopped): nobody would read what it stores."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _clusters(request: dict) -> int:
    workspace, fingerprint = request["workspace"], request["fingerprint"]
    vectors = workspace.load(fingerprint, "embeddings", request["embedding_params"], fmt="npy")
    if vectors is None:
        return 2
    store_clusters(workspace, fingerprint, request["params"], vectors, request["config"], request["metric"])
    return 0


def _dynamics(request: dict) -> int:
    from analytics.pipeline import train_ahead

    if request.get("threads"):
        import torch

        torch.set_num_threads(int(request["threads"]))
    return 0 if train_ahead(request["run"]) else 2


def main() -> int:
    task, request = pickle.load(sys.stdin.buffer)
    _leave_with(int(request["parent"]))
    try:
        os.nice(NICENESS)
    except (OSError, AttributeError):  # not allowed, or no nice on this system: at the same priority
        pass
    return _clusters(request) if task == "clusters" else _dynamics(request)


if __name__ == "__main__":
    raise SystemExit(main())
