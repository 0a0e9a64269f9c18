"""Benchmark: precomputed 384-d embeddings to a ready map, and the Map page's figure.

Targets (from the issue), on the 2-core reference machine:

- 100k examples to a ready map (kNN + UMAP + artefacts) in at most 60 s after the first numba
  compile; 1M in at most 10 min with peak memory under 8 GB;
- the Map page for 100k points draws and recolours in under 1 s of server time, and the figure
  payload stays under 40 bytes per point.

For each size the script

1. generates a seeded, embedding-like synthetic dataset (cached under ``--out/data``);
2. runs the analysis in a fresh child process (``bench/_run_analysis.py``), which first pays
   the numba compile on a small warm-up and then times loading and ``run_analysis``; the parent
   reads the child's peak RSS from the kernel (``os.wait4``);
3. builds the Map page's figure from the run's ``examples.parquet``, coloured by the label,
   then recoloured by a numeric and a categorical column, and measures the build time, the
   serialisation Streamlit does (``plotly.io.to_json``), and the payload size.

Results go to ``--out/map_speed.json``; a Markdown summary is printed.

Usage::

    .venv/bin/python bench/map_speed.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GENERATOR_VERSION = 1
CHUNK_ROWS = 50_000  # generation chunk; part of the recipe (changing it changes the data)
N_CLUSTERS = 50
N_CLASSES = 10
LABEL_NOISE = 0.05
LATENT_DIMS = 16  # each cluster varies mostly along its own 16-d subspace
LATENT_STD = 0.2  # per latent coordinate (latent offset norm about 0.8)
ISO_NOISE = 0.3  # norm of the isotropic noise
SOURCES = np.array(["web", "news", "forum", "books", "wiki", "code"])
SOURCE_WEIGHTS = np.array([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])
TARGETS = {
    100_000: {"ready_s": 60.0},
    1_000_000: {"ready_s": 600.0, "peak_rss_bytes": 8e9},
}
MAP_TARGETS = {"server_s": 1.0, "bytes_per_point": 40.0}
MAP_TARGET_N = 100_000
COLOURINGS = (("label", "draw"), ("length", "recolour (numeric)"), ("source", "recolour (categorical)"))


# ----------------------------------------------------------------------------- data


class ClusterModel:
    """The fixed parts of the synthetic data: cluster centres, subspaces, sizes and metadata.

    Parameters
    ----------
    dims : int
        Embedding dimension.
    seed : int
        Everything (centres, assignments, noise) follows from this seed.
    clusters, classes : int
        Number of clusters and of classes (label = cluster mod classes). The defaults are the
        benchmark's own data; other values give other data sets of the same kind (e.g. 60
        clusters and 12 classes in ``bench/knn_recall.py``).
    """

    def __init__(self, dims: int, seed: int, clusters: int = N_CLUSTERS, classes: int = N_CLASSES):
        if clusters < 1 or classes < 2:
            raise ValueError(f"need at least 1 cluster and 2 classes, not {clusters} and {classes}")
        rng = np.random.default_rng([seed, 0])
        centres = rng.standard_normal((clusters, dims))
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        # Orthonormal latent directions per cluster, shape (clusters, LATENT_DIMS, dims).
        raw = rng.standard_normal((clusters, dims, LATENT_DIMS))
        self.bases = np.stack([np.linalg.qr(block)[0].T for block in raw]).astype(np.float32)
        self.weights = rng.dirichlet(np.full(clusters, 2.0))  # unequal cluster sizes
        self.spread = rng.uniform(0.6, 1.3, clusters).astype(np.float32)
        self.length_mu = rng.uniform(3.0, 6.0, clusters)  # log-mean of the numeric column
        self.dims = dims
        self.seed = seed
        self.clusters = clusters
        self.classes = classes

    def chunk(self, index: int, rows: int, start_id: int) -> tuple[np.ndarray, pd.DataFrame]:
        """Rows ``start_id .. start_id + rows - 1`` of the data set.

        Returns
        -------
        vectors : ndarray of shape (rows, dims), float32, L2-normalised
        table : DataFrame with columns ``id``, ``label``, ``length``, ``source``
        """
        rng = np.random.default_rng([self.seed, 1, index])
        cluster = rng.choice(self.clusters, size=rows, p=self.weights)
        vectors = rng.standard_normal((rows, self.dims), dtype=np.float32)
        vectors *= ISO_NOISE / np.sqrt(self.dims)
        latent = rng.standard_normal((rows, LATENT_DIMS), dtype=np.float32) * LATENT_STD
        latent *= self.spread[cluster, None]
        for k in np.unique(cluster):
            members = cluster == k
            vectors[members] += self.centres[k] + latent[members] @ self.bases[k]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        labels = cluster % self.classes
        flip = rng.random(rows) < LABEL_NOISE
        labels[flip] = (labels[flip] + rng.integers(1, self.classes, flip.sum())) % self.classes
        length = np.maximum(1, rng.lognormal(self.length_mu[cluster], 0.5)).astype(np.int32)
        table = pd.DataFrame({
            "id": [f"ex{i:07d}" for i in range(start_id, start_id + rows)],
            "label": [f"class_{c}" for c in labels],
            "length": length,
            "source": SOURCES[rng.choice(len(SOURCES), size=rows, p=SOURCE_WEIGHTS)],
        })
        return vectors, table


def generate(folder: Path, n: int, dims: int, seed: int, *, clusters: int = N_CLUSTERS,
             classes: int = N_CLASSES) -> tuple[Path, Path]:
    """Write ``dataset.parquet`` and ``embeddings.npy`` (rows in dataset order) to ``folder``.

    Generated chunk by chunk straight into a memory-mapped ``.npy``, so 1M × 384 needs about
    100 MB of memory. Skipped when ``folder`` already holds a complete set for these parameters.
    ``clusters`` and ``classes`` as in :class:`ClusterModel` (the defaults give the benchmark's
    own data, identical to what earlier versions wrote).
    """
    dataset, embeddings, meta = folder / "dataset.parquet", folder / "embeddings.npy", folder / "meta.json"
    params = {"n": n, "dims": dims, "seed": seed, "generator_version": GENERATOR_VERSION,
              "chunk_rows": CHUNK_ROWS}
    if (clusters, classes) != (N_CLUSTERS, N_CLASSES):  # the defaults keep earlier meta.json valid
        params.update(clusters=clusters, classes=classes)
    if meta.is_file() and json.loads(meta.read_text()) == params and dataset.is_file() and embeddings.is_file():
        return dataset, embeddings
    folder.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)  # written last: its presence marks a complete set
    model = ClusterModel(dims, seed, clusters, classes)
    tmp_npy = folder / "embeddings.tmp.npy"
    array = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(n, dims))
    tables = []
    for index, start in enumerate(range(0, n, CHUNK_ROWS)):
        rows = min(CHUNK_ROWS, n - start)
        array[start:start + rows], table = model.chunk(index, rows, start + 1)
        tables.append(table)
    array.flush()
    del array
    tmp_parquet = folder / "dataset.tmp.parquet"
    pd.concat(tables, ignore_index=True).to_parquet(tmp_parquet, index=False)
    os.replace(tmp_npy, embeddings)
    os.replace(tmp_parquet, dataset)
    meta.write_text(json.dumps(params))
    return dataset, embeddings


# ----------------------------------------------------------------------------- analysis


def run_child(dataset: Path, embeddings: Path, run_dir: Path, workspace: Path, *,
              warmup_transform: bool, with_scores: bool = False) -> dict:
    """Run ``bench/_run_analysis.py`` in a new process; return its report plus its peak RSS.

    The run folder and the workspace are emptied first so nothing comes from a cache.
    """
    for folder in (run_dir, workspace):
        shutil.rmtree(folder, ignore_errors=True)
    command = [sys.executable, str(Path(__file__).with_name("_run_analysis.py")),
               "--dataset", str(dataset), "--embeddings", str(embeddings),
               "--out", str(run_dir), "--workspace", str(workspace)]
    if warmup_transform:
        command.append("--warmup-transform")
    if with_scores:
        command.append("--with-scores")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    stdout = child.stdout.read()  # stderr (progress) goes straight to the terminal
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    shutil.rmtree(workspace, ignore_errors=True)
    if child.returncode != 0:
        raise RuntimeError(f"analysis child exited with {child.returncode}; its output:\n{stdout}")
    line = next(l for l in reversed(stdout.splitlines()) if l.startswith("RESULT "))
    report = json.loads(line[len("RESULT "):])
    report["process_wall_s"] = round(wall, 3)
    report["peak_rss_bytes"] = usage.ru_maxrss * 1024  # KiB on Linux
    report["peak_rss_gb"] = round(usage.ru_maxrss * 1024 / 1e9, 3)
    return report


# ----------------------------------------------------------------------------- map figure


def serialise(figure) -> str:
    """The figure spec as Streamlit's ``st.plotly_chart`` builds it (streamlit 1.67)."""
    import plotly.io
    import plotly.tools

    spec = plotly.tools.return_figure_from_figure_or_data(figure, validate_figure=True)
    return plotly.io.to_json(spec, validate=False)


def time_figure(examples: pd.DataFrame, colour: str, hover, repeats: int) -> dict:
    """Build and serialise the Map page's figure ``repeats`` times; medians and payload."""
    from ui.figures import map_figure

    n = len(examples)
    builds, dumps = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        built = map_figure(examples["x"].to_numpy(), examples["y"].to_numpy(),
                           colour=examples[colour], colour_name=colour,
                           visible=np.ones(n, dtype=bool), selected=np.zeros(n, dtype=bool),
                           hover=hover, uirevision="bench")
        middle = time.perf_counter()
        spec = serialise(built.figure)
        builds.append(middle - started)
        dumps.append(time.perf_counter() - middle)
    payload = len(spec.encode("utf-8"))
    build, dump = statistics.median(builds), statistics.median(dumps)
    return {"colour": colour, "traces": len(built.figure.data), "build_s": round(build, 4),
            "serialise_s": round(dump, 4), "server_s": round(build + dump, 4),
            "server_s_max": round(max(b + d for b, d in zip(builds, dumps)), 4),
            "payload_bytes": payload, "bytes_per_point": round(payload / n, 2),
            "hover_text": built.hover_text}


def synthetic_texts(n: int, seed: int, width: int = 80) -> pd.Series:
    """Random lower-case 'sentences' of ``width`` characters (the dataset has no text column)."""
    rng = np.random.default_rng([seed, 2])
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz      ", dtype=np.uint8)
    chars = alphabet[rng.integers(0, len(alphabet), (n, width))]
    return pd.Series(chars.view(f"S{width}").ravel()).str.decode("ascii")


def map_bench(run_dir: Path, seed: int, repeats: int) -> dict:
    """Time the Map page's figure on a run: draw, two recolours, and hover-text variants."""
    from analytics.pipeline import load_run
    from ui.figures import HOVER_TEXT_MAX_POINTS, hover_previews, map_figure

    started = time.perf_counter()
    run = load_run(run_dir)
    open_s = time.perf_counter() - started
    examples = run.examples
    n = len(examples)
    tiny = examples.head(100)  # warm plotly's lazy imports and validators, as a running server has
    serialise(map_figure(tiny["x"].to_numpy(), tiny["y"].to_numpy(), colour=tiny["label"],
                         colour_name="label").figure)

    started = time.perf_counter()
    page_hover = hover_previews(examples["id"], None) if n <= HOVER_TEXT_MAX_POINTS else None
    hover_s = time.perf_counter() - started
    result = {"n": n, "open_run_s": round(open_s, 3), "hover_previews_s": round(hover_s, 3),
              "hover_text_max_points": HOVER_TEXT_MAX_POINTS, "page": [], "forced_hover": []}
    for colour, step in COLOURINGS:
        result["page"].append({"step": step, **time_figure(examples, colour, page_hover, repeats)})

    # For information: what per-point hover strings would cost at this size.
    variants = [("ids (previews of this dataset)", None)] if page_hover is None else []
    variants.append(("id + 60-char text (synthetic)", synthetic_texts(n, seed)))
    for name, texts in variants:
        started = time.perf_counter()
        hover = hover_previews(examples["id"], texts)
        hover_s = time.perf_counter() - started
        timing = time_figure(examples, "label", hover, repeats)
        result["forced_hover"].append({"hover": name, "hover_previews_s": round(hover_s, 3), **timing})
    return result


# ----------------------------------------------------------------------------- report


def check_targets(entry: dict) -> dict:
    """Pass/fail against the issue's targets, where the size is one the issue names."""
    n, analysis, checks = entry["n"], entry["analysis"], {}
    target = TARGETS.get(n, {})
    if "ready_s" in target:
        checks[f"ready_s <= {target['ready_s']:g}"] = analysis["ready_s"] <= target["ready_s"]
    if "peak_rss_bytes" in target:
        checks[f"peak RSS < {target['peak_rss_bytes'] / 1e9:g} GB"] = \
            analysis["peak_rss_bytes"] < target["peak_rss_bytes"]
    if n == MAP_TARGET_N and entry.get("map"):
        page = entry["map"]["page"]
        checks[f"map server_s < {MAP_TARGETS['server_s']:g} (each step)"] = \
            all(step["server_s"] < MAP_TARGETS["server_s"] for step in page)
        checks[f"map bytes/point < {MAP_TARGETS['bytes_per_point']:g}"] = \
            all(step["bytes_per_point"] < MAP_TARGETS["bytes_per_point"] for step in page)
    return checks


def markdown(results: dict) -> str:
    """Markdown tables of the results."""
    lines = ["### Analysis (child process, after the numba warm-up)", "",
             "| n | load s | embeddings s | kNN s (method, recall) | PCA s | UMAP s | artefacts s "
             "| **ready s** | numba warm-up s | process wall s | peak RSS GB |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in results["sizes"]:
        a, t = entry["analysis"], entry["analysis"]["timings_s"]
        lines.append(f"| {entry['n']:,} | {a['load_s']:.1f} | {t['embeddings']:.1f} | "
                     f"{t['neighbors']:.1f} ({a['knn_method']}, {a['knn_recall']:.4f}) | {t['pca']:.1f} | "
                     f"{t.get('umap', 0):.1f} | {t['artefacts']:.1f} | **{a['ready_s']:.1f}** | "
                     f"{a['numba_warmup_s']:.1f} | {a['process_wall_s']:.1f} | {a['peak_rss_gb']:.2f} |")
    lines += ["", "### Map page figure (server side: build + Streamlit's JSON serialisation; median)", "",
              "| n | step | colour | hover text | traces | build s | serialise s | **server s** "
              "| payload MB | **bytes/point** |",
              "|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for entry in results["sizes"]:
        if not entry.get("map"):
            continue
        rows = [(s["step"], s, "yes" if s["hover_text"] else "no") for s in entry["map"]["page"]]
        rows += [("forced hover (info)", s, s["hover"]) for s in entry["map"]["forced_hover"]]
        for step, s, hover in rows:
            lines.append(f"| {entry['n']:,} | {step} | {s['colour']} | {hover} | {s['traces']} | "
                         f"{s['build_s']:.3f} | {s['serialise_s']:.3f} | **{s['server_s']:.3f}** | "
                         f"{s['payload_bytes'] / 1e6:.2f} | **{s['bytes_per_point']:.1f}** |")
    checks = [(entry["n"], name, ok) for entry in results["sizes"] for name, ok in entry["checks"].items()]
    if checks:
        lines += ["", "### Targets", "", "| n | target | result |", "|---:|---|---|"]
        lines += [f"| {n:,} | {name} | {'PASS' if ok else 'FAIL'} |" for n, name, ok in checks]
    return "\n".join(lines)


def machine_info() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "git_commit": commit, "git_dirty": dirty}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="figure builds per colouring (median reported)")
    parser.add_argument("--no-map", action="store_true", help="skip the Map page figure benchmark")
    parser.add_argument("--with-scores", action="store_true",
                        help="also time training dynamics (probe), held-out probabilities and every score")
    args = parser.parse_args(argv)

    from analytics.pipeline import AnalysisConfig

    out = args.out.resolve()
    results = {"benchmark": "map_speed", "machine": machine_info(), "dims": args.dims, "seed": args.seed,
               "generator": {"version": GENERATOR_VERSION, "clusters": N_CLUSTERS, "classes": N_CLASSES,
                             "label_noise": LABEL_NOISE, "latent_dims": LATENT_DIMS},
               "targets": {"analysis": {str(n): t for n, t in TARGETS.items()}, "map": MAP_TARGETS,
                           "map_n": MAP_TARGET_N},
               "sizes": []}
    fit_max = AnalysisConfig().umap_fit_max
    for n in args.sizes:
        print(f"== n = {n:,}: generating data", file=sys.stderr, flush=True)
        started = time.perf_counter()
        dataset, embeddings = generate(out / "data" / f"n{n}_d{args.dims}_s{args.seed}", n, args.dims, args.seed)
        generate_s = time.perf_counter() - started
        print(f"== n = {n:,}: analysis in a child process", file=sys.stderr, flush=True)
        run_dir = out / "runs" / f"n{n}_d{args.dims}_s{args.seed}"
        analysis = run_child(dataset, embeddings, run_dir, out / "runs" / f"n{n}_workspace",
                             warmup_transform=n > fit_max, with_scores=args.with_scores)
        entry = {"n": n, "generate_s": round(generate_s, 2), "analysis": analysis}
        if not args.no_map:
            print(f"== n = {n:,}: map figure", file=sys.stderr, flush=True)
            entry["map"] = map_bench(run_dir, args.seed, args.repeats)
        entry["checks"] = check_targets(entry)
        results["sizes"].append(entry)
        out.mkdir(parents=True, exist_ok=True)
        (out / "map_speed.json").write_text(json.dumps(results, indent=2))  # after every size
    print(markdown(results))
    print(f"\nwrote {out / 'map_speed.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
