"""Long library calls report progress: printed "i / n" text becomes progress reports."""

from __future__ import annotations

import numpy as np

from analytics.neighbors import build_knn
from analytics.progress import ProgressStream
from analytics.projection import project_umap


def test_pieces_of_printed_lines_and_tqdm_updates_become_fractions():
    seen = []
    stream = ProgressStream(lambda f, m: seen.append((round(f, 3), m)), "step", start=0.5, end=1.0)
    for piece in ("\t", " ", "3", " ", " / ", " ", "12", "\n"):  # how print("\t", 3, " / ", 12) writes
        stream.write(piece)
    stream.write("\r5/10\r5/10\r10/10")  # tqdm redraws; repeats are reported once
    stream.write("\nno numbers here\n")
    assert seen == [(0.625, "step 3 of 12"), (0.75, "step 5 of 10"), (1.0, "step 10 of 10")]


def test_nn_descent_and_umap_report_their_iterations():
    vectors = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    seen = []
    graph = build_knn(vectors, k=10, exact_max=100, progress=lambda f, m: seen.append((f, m)))
    assert any(m.startswith("NN-descent: iteration 1 of") for _, m in seen)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    seen.clear()
    project_umap(vectors, knn=graph, n_neighbors=11, n_epochs=30, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1] == (1.0, "UMAP: epoch 30 of 30")
