"""Benchmark: clustering, naming, the per-cluster table and slice discovery at 100k (and more).

Uses the synthetic 384-d embeddings of ``map_speed.py`` (generated on first use, under
``--out/data``). The clusters stage runs exactly as in the pipeline: k-means with k chosen by
silhouette over the ladder (fitted on a 20k sample, every example assigned), then the fine
level; then names, ``clusters.parquet``'s table and ``slices.parquet``'s ranking. Slices need
per-example errors: they come from the run folder that ``map_speed.py --with-scores`` leaves in
``--out/runs`` when it exists (its probe's out-of-fold predictions); otherwise that step is
skipped and the report says so. The generator's 50 planted clusters let us report how well
k-means recovers them (adjusted Rand index on the coarse level).

Usage::

    .venv/bin/python bench/clusters_speed.py --sizes 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import generate, machine_info  # noqa: E402


def run(n: int, out: Path, dims: int, seed: int) -> dict:
    from analytics.clusters import ClusterConfig, cluster_embeddings, cluster_summary, name_clusters
    from analytics.pipeline import discover_run_slices
    from analytics.slices import SliceConfig, uniformity

    dataset_path, embeddings_path = generate(out / "data" / f"n{n}_d{dims}_s{seed}", n, dims, seed)
    table = pd.read_parquet(dataset_path)
    vectors = np.load(embeddings_path, mmap_mode="r")
    timings: dict[str, float] = {}
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("fine clusters") and "fine" not in marks:
            marks["fine"] = time.perf_counter()

    config = ClusterConfig()
    clustering = cluster_embeddings(vectors, config=config, metric="cosine", progress=progress)
    end = time.perf_counter()
    timings["coarse_s"] = round(marks.get("fine", end) - start, 2)
    timings["fine_and_representatives_s"] = round(end - marks.get("fine", end), 2)
    timings["clusters_s"] = round(end - start, 2)

    examples = table.copy()
    examples["cluster"], examples["cluster_fine"] = clustering.coarse, clustering.fine
    run_dir = out / "runs" / f"n{n}_d{dims}_s{seed}"
    errors_from = None
    if (run_dir / "examples.parquet").is_file():
        run_examples = pd.read_parquet(run_dir / "examples.parquet")
        if len(run_examples) == n and (run_examples["id"].to_numpy() == examples["id"].to_numpy()).all():
            column = "correct" if "correct" in run_examples.columns else "heldout_correct"
            if column in run_examples.columns:
                examples["correct"] = run_examples[column].to_numpy()
                errors_from = f"{run_dir / 'examples.parquet'} ({column})"
                for c in ("el2n", "aum", "label_issue", "region"):
                    if c in run_examples.columns:
                        examples[c] = run_examples[c].to_numpy()

    started = time.perf_counter()
    names = {level: name_clusters(assignments, kind="tabular", ids=examples["id"], labels=examples["label"],
                                  table=table, feature_columns=["length", "source"],
                                  representatives=clustering.representatives[level])
             for level, assignments in (("coarse", clustering.coarse), ("fine", clustering.fine))}
    timings["names_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    correct = examples["correct"].to_numpy() if "correct" in examples.columns else None
    summaries = {level: cluster_summary(examples, column, names=names[level], correct=correct,
                                        score_columns=[c for c in ("el2n", "aum", "label_issue") if c in examples])
                 for level, column in (("coarse", "cluster"), ("fine", "cluster_fine"))}
    timings["summary_s"] = round(time.perf_counter() - started, 2)
    result = {"n": n, "k": clustering.k, "n_fine": int(len(clustering.fine_parent)),
              "silhouette_by_k": clustering.silhouette_by_k, "notes": list(clustering.notes), "timings": timings}
    try:
        from sklearn.metrics import adjusted_rand_score

        truth = _planted_clusters(n, dims, seed)
        result["planted_clusters"] = int(len(np.unique(truth)))
        result["ari_vs_planted_clusters"] = round(float(adjusted_rand_score(truth, clustering.coarse)), 4)
        result["ari_fine_vs_planted_clusters"] = round(float(adjusted_rand_score(truth, clustering.fine)), 4)
    except Exception as exc:  # the planted clusters are a bonus figure
        result["ari_error"] = str(exc)
    if correct is not None:
        started = time.perf_counter()
        clusters = pd.concat([summaries["coarse"].assign(level="coarse"), summaries["fine"].assign(level="fine")])
        slices = discover_run_slices(examples, clusters, SliceConfig())
        timings["slices_s"] = round(time.perf_counter() - started, 2)
        result["errors_from"] = errors_from
        result["uniformity"] = uniformity(summaries["coarse"]["accuracy"].to_numpy())
        result["top_slices"] = slices.head(5)[["slice", "support", "error_rate", "ci_low", "ci_high", "lift"]] \
            .round(4).to_dict(orient="records")
    else:
        result["errors_from"] = "none: run map_speed.py --with-scores first for slices"
    timings["total_s"] = round(sum(v for k, v in timings.items() if k in
                                   ("clusters_s", "names_s", "summary_s", "slices_s")), 2)
    return result


def _planted_clusters(n: int, dims: int, seed: int) -> np.ndarray:
    """The generator's own cluster of every row: the first draw of each chunk's generator, as in
    ``map_speed.ClusterModel.chunk``."""
    from bench import map_speed

    model = map_speed.ClusterModel(dims, seed)
    parts = []
    for index, start in enumerate(range(0, n, map_speed.CHUNK_ROWS)):
        rng = np.random.default_rng([seed, 1, index])
        parts.append(rng.choice(map_speed.N_CLUSTERS, size=min(map_speed.CHUNK_ROWS, n - start), p=model.weights))
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {"benchmark": "clusters_speed", "machine": machine_info(), "sizes": []}
    for n in args.sizes:
        print(f"== n = {n:,}", file=sys.stderr, flush=True)
        results["sizes"].append(run(n, args.out.resolve(), args.dims, args.seed))
        results["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        (args.out / "clusters_speed.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
