"""Check: the methods the pipeline switches to at scale give the same science, for less time.

From 200k examples on, the analysis (1) trains cross-fitted probes — ``seeds + 1`` probes, each
on all but one fold, giving both the training dynamics and the out-of-fold probabilities
(:func:`analytics.dynamics.cross_fit_dynamics`) — instead of ``seeds`` probes on everything plus
``folds`` more for the held-out probabilities, and (2) starts UMAP from the PCA map instead of
its spectral initialisation. This script runs both ways on the same data below that threshold
(default 100k, the synthetic data of ``bench/map_speed.py`` with 5% planted label flips) and
reports:

- time of each way;
- for every score: AUROC at finding the planted flips under each scheme, and the Spearman
  rank correlation between the two schemes' values;
- for UMAP: time and trustworthiness (15 neighbours, cosine, a seeded sample of 5,000 rows)
  from each start, on the same shared kNN graph.

Results go to ``--out/large_data_methods.json``; a Markdown summary is printed.

Usage::

    .venv/bin/python bench/large_data_methods.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import generate, machine_info  # noqa: E402
from bench.peers import planted_flips, score_directions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=REPO / "bench" / "results" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)

    from scipy.stats import spearmanr
    from sklearn.manifold import trustworthiness
    from sklearn.metrics import roc_auc_score

    from analytics.dynamics import ProbeConfig, cross_fit_dynamics, cross_fit_probabilities, train_probe
    from analytics.neighbors import build_knn
    from analytics.projection import project_pca, project_umap
    from analytics.scores import SCORES, ScoreInputs, compute_scores

    dataset, embeddings = generate(args.data / f"n{args.n}_d{args.dims}_s{args.seed}", args.n, args.dims, args.seed)
    flipped = planted_flips(dataset, args.n, args.dims, args.seed)
    vectors = np.load(embeddings)
    labels_text = pd.read_parquet(dataset, columns=["label"])["label"]
    classes = sorted(labels_text.unique())
    labels = pd.Categorical(labels_text, categories=classes).codes.astype(np.int64)
    k = len(classes)
    config = ProbeConfig()
    graph = build_knn(vectors, k=15)

    def timed(compute):
        started = time.perf_counter()
        value = compute()
        return value, round(time.perf_counter() - started, 1)

    (independent, held_independent), t_independent = timed(lambda: (
        train_probe(vectors, labels, k, config), cross_fit_probabilities(vectors, labels, k, config)[0]))
    (crossed, held_crossed, _), t_crossed = timed(lambda: cross_fit_dynamics(vectors, labels, k, config))
    # the yardstick: the independent scheme again with other seeds
    other = train_probe(vectors, labels, k, config, first_seed=100)
    held_other = cross_fit_probabilities(vectors, labels, k, config, first_seed=100)[0]

    def scores(dynamics, held):
        return compute_scores(ScoreInputs(labels=labels, logits_by_epoch=dynamics.logits,
                                          early_epoch=dynamics.early_epoch, heldout_probs=held,
                                          knn_indices=graph.indices, knn_distances=graph.distances,
                                          hidden_norms=dynamics.hidden_norms))

    table_independent, table_crossed = scores(independent, held_independent), scores(crossed, held_crossed)
    table_other = scores(other, held_other)

    def top_overlap(a, b, sign, share=0.05):
        count = max(1, int(len(a) * share))
        return len(np.intersect1d(np.argsort(-sign * a)[:count], np.argsort(-sign * b)[:count])) / count
    rows = []
    signs = score_directions({"scores": {name: {"columns": list(score.columns), "direction": score.direction}
                                         for name, score in SCORES.items()}})
    for column, sign in signs.items():
        if column not in table_independent:
            continue
        a = table_independent[column].to_numpy(dtype=float)
        b = table_crossed[column].to_numpy(dtype=float)
        if not (np.isfinite(a).all() and np.isfinite(b).all()) or a.std() == 0:
            continue
        c = table_other[column].to_numpy(dtype=float)
        rows.append({"score": column, "auroc_independent": round(float(roc_auc_score(flipped, sign * a)), 4),
                     "auroc_cross_fit": round(float(roc_auc_score(flipped, sign * b)), 4),
                     "spearman_cross_fit_vs_independent": round(float(spearmanr(a, b).statistic), 4),
                     "spearman_independent_other_seeds": round(float(spearmanr(a, c).statistic), 4),
                     "top5_overlap_cross_fit_vs_independent": round(top_overlap(a, b, sign), 4),
                     "top5_overlap_independent_other_seeds": round(top_overlap(a, c, sign), 4)})

    pca = project_pca(vectors)
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(args.n, size=min(args.sample, args.n), replace=False)
    umap_rows = []
    for start in ("spectral", "pca"):
        coords, seconds = timed(lambda: project_umap(vectors, knn=graph, n_neighbors=16,
                                                     init=pca if start == "pca" else None))
        umap_rows.append({"start": start, "umap_s": seconds,
                          "trustworthiness": round(float(trustworthiness(vectors[sample], coords[sample],
                                                                         n_neighbors=15, metric="cosine")), 4)})
    result = {"benchmark": "large_data_methods", "machine": machine_info(), "n": args.n, "dims": args.dims,
              "probe": {"hidden": config.hidden, "epochs": config.epochs, "seeds": config.seeds, "folds": config.folds},
              "probe_time_s": {"independent (seeds + folds)": t_independent, "cross-fit (seeds + 1)": t_crossed},
              "heldout_accuracy": {"independent": round(float((held_independent.argmax(1) == labels).mean()), 4),
                                   "cross-fit": round(float((held_crossed.argmax(1) == labels).mean()), 4)},
              "scores": rows, "umap": umap_rows, "trust_sample": len(sample)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_data_methods.json").write_text(json.dumps(result, indent=2))

    print(f"\n## Large-data methods at {args.n:,} (AUROC against the planted flips)\n")
    print(f"Probes: independent {t_independent:.0f} s, cross-fit {t_crossed:.0f} s; held-out accuracy "
          f"{result['heldout_accuracy']['independent']:.4f} vs {result['heldout_accuracy']['cross-fit']:.4f}\n")
    print("| score | AUROC independent | AUROC cross-fit | Spearman cross-fit vs independent | "
          "Spearman independent vs other seeds | top-5% overlap cross-fit vs independent | "
          "top-5% overlap independent vs other seeds |\n|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['score']} | {row['auroc_independent']:.4f} | {row['auroc_cross_fit']:.4f} | "
              f"{row['spearman_cross_fit_vs_independent']:.3f} | {row['spearman_independent_other_seeds']:.3f} | "
              f"{row['top5_overlap_cross_fit_vs_independent']:.3f} | {row['top5_overlap_independent_other_seeds']:.3f} |")
    print("\n| UMAP start | time s | trustworthiness |\n|---|---:|---:|")
    for row in umap_rows:
        print(f"| {row['start']} | {row['umap_s']:.1f} | {row['trustworthiness']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
