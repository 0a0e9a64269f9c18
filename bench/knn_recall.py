"""Benchmark: recall@15 of the approximate kNN graph against its time, old settings and new method.

Issue 14 item 4: on a second 1M × 384 data set (60 clusters, 12 classes) NN-descent with the
pipeline's settings (``n_neighbors = k + 1``, ``low_memory=True``, pynndescent's defaults for
``n_iters``, ``max_candidates`` and ``n_trees``) reached recall@15 of only 0.865, against 0.956 on
the benchmark's own data (50 clusters, 10 classes). Target: recall@15 ≥ 0.95 at every size,
inside the 10-minute budget of ``cartographer analyze`` at 1M × 384.

For each data kind and size the script generates the seeded synthetic data of
``bench/map_speed.py`` (``own``: 50 clusters, 10 classes; ``variant``: 60 clusters, 12 classes)
and, in a fresh child process (its own peak RSS and CPU time, read with ``os.wait4``):

1. warms numba up on 6,000 points (NN-descent and the refinement kernel), so compile time is
   not counted;
2. loads the embeddings into memory, as ``cartographer analyze`` does;
3. **old**: ``analytics.neighbors.build_knn`` with the refinement switched off
   (``MAX_REFINE_PASSES = 0``): NN-descent plus the recall measurement, the code before this
   change;
4. **new**: the refinement ``build_knn`` applies to that graph (``_refine_to_target``: neighbour-
   of-neighbour passes while the measured recall is below ``REFINE_BELOW``); its time is old +
   refinement, exactly what ``build_knn`` spends;
5. for information, refinement passes forced on the old graph (``--curve-passes``): recall
   against time, also beyond the point where the method stops.

Recall@15 is measured against exact search on ``--queries`` random points: the sample
``build_knn`` itself uses (seed 0) and, as a check that the refinement rule is not fitted to its
own sample, an independent one (seed 1). Times are wall and CPU seconds of the process (all
threads: numba's and BLAS's); the load average is recorded because the machine may be shared.

Results go to ``--out/knn_recall.json``; a Markdown table is printed. Generated data goes to
``--data`` and is deleted at the end unless ``--keep-data`` (1M × 384 is 1.5 GB per data kind).

Usage::

    nice -n 5 .venv/bin/python bench/knn_recall.py --sizes 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import ClusterModel, generate, machine_info  # noqa: E402

#: Data kinds: name → (clusters, classes).
KINDS = {"own": (50, 10), "variant": (60, 12)}
K = 15
WARMUP_ROWS = 6000


# ----------------------------------------------------------------------------- child


class Clock:
    """Wall and CPU time (all threads of this process) since construction."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu()

    def read(self) -> dict:
        return {"wall_s": round(time.perf_counter() - self.wall, 2), "cpu_s": round(_cpu() - self.cpu, 2),
                "load_avg_1m": round(os.getloadavg()[0], 2)}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(embeddings: Path, queries: int, curve_passes: int) -> dict:
    """Old settings, then the new method, on one data set; returns the measurements."""
    import numpy as np

    import analytics.neighbors as neighbors

    warm, _ = ClusterModel(384, seed=12345).chunk(0, WARMUP_ROWS, 1)
    clock = Clock()
    graph = neighbors.build_knn(warm, k=K, exact_max=1000, recall_queries=200)
    neighbors.refine_knn(warm, graph.indices)
    warmup = clock.read()

    clock = Clock()
    vectors = np.load(embeddings)
    load = clock.read()
    n = len(vectors)

    default_passes = neighbors.MAX_REFINE_PASSES
    neighbors.MAX_REFINE_PASSES = 0  # the code before the refinement: NN-descent + recall check
    try:
        clock = Clock()
        old = neighbors.build_knn(vectors, k=K, recall_queries=queries, seed=0)
        old_time = clock.read()
    finally:
        neighbors.MAX_REFINE_PASSES = default_passes
    sample, truth = neighbors._recall_truth(vectors, n, K, "cosine", queries, 0)  # build_knn's own sample
    assert abs(neighbors._recall_of(old.indices, sample, truth) - old.recall) < 1e-12

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    clock = Clock()
    new = neighbors._refine_to_target(data, old, sample, truth, lambda fraction, message: None)
    refine_time = clock.read()
    check, check_truth = neighbors._recall_truth(vectors, n, K, "cosine", queries, 1)

    def row(method: str, graph, spent: dict) -> dict:
        return {"method": method, "passes": graph.refine_passes, "recall": round(graph.recall, 4),
                "recall_independent": round(neighbors._recall_of(graph.indices, check, check_truth), 4),
                **spent}

    total = {key: round(old_time[key] + refine_time[key], 2) for key in ("wall_s", "cpu_s")}
    rows = [row("old", old, old_time),
            row("new", new, {**total, "load_avg_1m": refine_time["load_avg_1m"],
                             "refine_wall_s": refine_time["wall_s"], "refine_cpu_s": refine_time["cpu_s"]})]
    indices, fresh, spent = old.indices, None, {key: old_time[key] for key in ("wall_s", "cpu_s")}
    for passes in range(1, curve_passes + 1):  # for information: passes forced on the old graph
        clock = Clock()
        indices, distances, fresh = neighbors.refine_knn(data, indices, new=fresh)
        step = clock.read()
        spent = {key: round(spent[key] + step[key], 2) for key in ("wall_s", "cpu_s")}
        forced = neighbors.KnnGraph(indices, distances, "cosine", "nndescent",
                                    neighbors._recall_of(indices, sample, truth), len(sample), passes)
        label = f"forced, {passes} pass" + ("es" if passes > 1 else "")
        rows.append(row(label, forced, {**spent, "load_avg_1m": step["load_avg_1m"]}))
    return {"n": n, "warmup": warmup, "load": load, "rows": rows}


# ----------------------------------------------------------------------------- parent


def run_child(embeddings: Path, queries: int, curve_passes: int) -> dict:
    """``child`` in a fresh process; adds its peak RSS and total CPU time from the kernel."""
    command = [sys.executable, __file__, "--child", str(embeddings), "--queries", str(queries),
               "--curve-passes", str(curve_passes)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the benchmark child failed; its output:\n{stdout}")
    line = next(text for text in reversed(stdout.splitlines()) if text.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["peak_rss_gb"] = round(usage.ru_maxrss * 1024 / 1e9, 3)
    result["process_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return result


def markdown(results: dict) -> str:
    """The recall-against-time table."""
    lines = [f"| data | n | method | refine passes | recall@{K} | recall@{K}, other queries | wall s | CPU s "
             "| load avg | peak RSS GB |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in results["runs"]:
        clusters, classes = KINDS[entry["kind"]]
        for r in entry["rows"]:
            recall = f"**{r['recall']:.4f}**" if r["method"] == "new" else f"{r['recall']:.4f}"
            lines.append(f"| {entry['kind']} ({clusters} clusters, {classes} classes) | {entry['n']:,} | "
                         f"{r['method']} | {r['passes']} | {recall} | {r['recall_independent']:.4f} | "
                         f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['load_avg_1m']:.1f} | "
                         f"{entry['peak_rss_gb']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", choices=sorted(KINDS), default=["own", "variant"])
    parser.add_argument("--queries", type=int, default=1000, help="exact queries for recall@15")
    parser.add_argument("--curve-passes", type=int, default=0,
                        help="for information, force refinement passes up to this many (recall vs time)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/cartographer-knn-recall"),
                        help="generated data (deleted at the end unless --keep-data)")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.queries, args.curve_passes)), flush=True)
        return 0

    from analytics import neighbors

    results = {"benchmark": "knn_recall", "machine": machine_info(), "k": K, "queries": args.queries,
               "dims": 384, "seed": 0,
               "method": {"recall_target": neighbors.RECALL_TARGET, "refine_below": neighbors.REFINE_BELOW,
                          "max_refine_passes": neighbors.MAX_REFINE_PASSES,
                          "min_refine_gain": neighbors.MIN_REFINE_GAIN},
               "kinds": {name: {"clusters": c, "classes": k} for name, (c, k) in KINDS.items()}, "runs": []}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for n in args.sizes:
            for kind in args.kinds:
                clusters, classes = KINDS[kind]
                folder = args.data / f"{kind}_n{n}"
                print(f"== {kind}, n = {n:,}: generating", file=sys.stderr, flush=True)
                _, embeddings = generate(folder, n, 384, 0, clusters=clusters, classes=classes)
                print(f"== {kind}, n = {n:,}: old settings and new method (child process)", file=sys.stderr,
                      flush=True)
                entry = {"kind": kind, "n": n, **run_child(embeddings, args.queries, args.curve_passes)}
                results["runs"].append(entry)
                for r in entry["rows"]:
                    print(f"   {r['method']}: recall {r['recall']:.4f} ({r['recall_independent']:.4f}), "
                          f"{r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU", file=sys.stderr, flush=True)
                if not args.keep_data:
                    shutil.rmtree(folder, ignore_errors=True)
                (args.out / "knn_recall.json").write_text(json.dumps(results, indent=2))  # after every run
    finally:
        if not args.keep_data:
            for n in args.sizes:
                for kind in args.kinds:
                    shutil.rmtree(args.data / f"{kind}_n{n}", ignore_errors=True)
            with contextlib.suppress(OSError):
                args.data.rmdir()  # only when empty
    print(markdown(results))
    print(f"\nwrote {args.out / 'knn_recall.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
