"""Benchmark: our pipeline against the tools researchers use today, on the same inputs.

Peers, each in its own child process (so time and peak memory are its own), per size:

- **ours**: ``bench/_run_analysis.py --with-scores`` (the full analysis: kNN, PCA, UMAP, probe
  dynamics, cross-fitted held-out probabilities, every score, clusters, artefacts) in a fresh
  workspace; its numba warm-up is excluded from the timings and reported on its own.
- **datalab**: cleanlab's ``Datalab.find_issues`` with issue types label, outlier,
  near_duplicate and data_valuation, on the same 384-d features and the same out-of-fold
  probabilities our run wrote (``heldout_probs.npy``).
- **umap**: umap-learn with its defaults, ``umap.UMAP().fit_transform(X)``, after a warm-up fit
  on 6,000 synthetic points in the same process that pays numba's compile (not timed).

The data is ``map_speed.py``'s seeded synthetic set (cached under ``--out/data``). Its 5% label
noise is recovered row by row by replaying the generator's random stream
(:func:`planted_labels`), and each label score's AUROC at finding the flipped rows is computed
for Datalab and for every score of our run. Both 2-D maps are judged by
``sklearn.manifold.trustworthiness`` (15 neighbours, cosine distances on the original vectors)
on one seeded sample of rows.

A peer that fails at a size (error, ``MemoryError``, killed by the kernel, or not finished
within ``--max-seconds``, when it is killed) is not tried at larger sizes. Our run has no limit.

Results go to ``--out/peers.json`` (written after every size); a Markdown summary is printed.

Usage::

    .venv/bin/python bench/peers.py                      # 10k, 100k, 300k, 1M; 15 min per peer run
    .venv/bin/python bench/peers.py --sizes 5000 20000 --max-seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
for _path in (str(REPO), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from map_speed import (  # noqa: E402  (after the path set-up)
    CHUNK_ROWS, GENERATOR_VERSION, LABEL_NOISE, LATENT_DIMS, N_CLASSES, N_CLUSTERS, ClusterModel,
    generate, machine_info,
)

PEERS = ("datalab", "umap")
DEFAULT_SIZES = (10_000, 100_000, 300_000, 1_000_000)
DATALAB_ISSUE_TYPES = ("label", "outlier", "near_duplicate", "data_valuation")
TRUST_NEIGHBORS = 15
TRUST_METRIC = "cosine"
WARMUP_ROWS = 6000  # as _run_analysis.py: >= 4096 so umap-learn's NN-descent path is compiled too
SAMPLE_INTERVAL_S = 0.2


# ----------------------------------------------------------------------------- ground truth


def planted_labels(n: int, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean and the noisy class of every row of ``map_speed.generate(folder, n, dims, seed)``.

    Replays each chunk's random stream in the order ``ClusterModel.chunk`` draws from it
    (clusters, vectors, latent offsets, then the flips), without building the vectors: the
    draws are made only to advance the stream. The generator itself is unchanged.

    Returns
    -------
    clean : ndarray of shape (n,), int64
        ``cluster mod N_CLASSES``, the label before the noise.
    noisy : ndarray of shape (n,), int64
        The label the dataset carries (differs from ``clean`` exactly where it was flipped).
    """
    model = ClusterModel(dims, seed)
    clean_parts, noisy_parts = [], []
    for index, start in enumerate(range(0, n, CHUNK_ROWS)):
        rows = min(CHUNK_ROWS, n - start)
        rng = np.random.default_rng([model.seed, 1, index])
        cluster = rng.choice(N_CLUSTERS, size=rows, p=model.weights)
        rng.standard_normal((rows, dims), dtype=np.float32)  # the vectors' noise
        rng.standard_normal((rows, LATENT_DIMS), dtype=np.float32)  # the latent offsets
        clean = cluster % N_CLASSES
        flip = rng.random(rows) < LABEL_NOISE
        noisy = clean.copy()
        noisy[flip] = (clean[flip] + rng.integers(1, N_CLASSES, flip.sum())) % N_CLASSES
        clean_parts.append(clean)
        noisy_parts.append(noisy)
    return np.concatenate(clean_parts), np.concatenate(noisy_parts)


def planted_flips(dataset: Path, n: int, dims: int, seed: int) -> np.ndarray:
    """Boolean array of shape (n,): True where the generator flipped the label.

    Checks that the replayed noisy labels equal the dataset's labels exactly; a mismatch means
    the generator's recipe changed and :func:`planted_labels` no longer follows it.
    """
    clean, noisy = planted_labels(n, dims, seed)
    labels = pd.read_parquet(dataset, columns=["label"])["label"].to_numpy()
    expected = np.char.add("class_", noisy.astype(str))
    if len(labels) != n or not np.array_equal(labels.astype(str), expected):
        raise RuntimeError(f"{dataset}: the replayed labels do not match the dataset's; "
                           "planted_labels() no longer follows ClusterModel.chunk")
    return clean != noisy


# ----------------------------------------------------------------------------- child processes


def _tree_memory(pid: int) -> int:
    """RSS of ``pid`` plus the unique memory (USS) of its descendants, in bytes.

    USS for the descendants because forked workers share their parent's pages, which RSS would
    count twice.
    """
    import psutil

    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_full_info().uss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total
    except psutil.NoSuchProcess:
        return 0


def run_limited(command: list[str], *, logs: Path, limit_s: float | None) -> dict:
    """Run ``command`` in a new process group; kill the group if it runs past ``limit_s``.

    stdout and stderr go to ``logs.stdout`` / ``logs.stderr`` (kept). Memory is sampled every
    0.2 s over the process tree; the kernel's ``ru_maxrss`` (``os.wait4``) is read at the end.
    The last stdout line starting with ``RESULT `` is parsed as the child's report.
    """
    logs.parent.mkdir(parents=True, exist_ok=True)
    stdout_path, stderr_path = logs.with_suffix(".stdout"), logs.with_suffix(".stderr")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        child = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        peak_tree, killed = 0, False
        try:
            while True:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    break
                peak_tree = max(peak_tree, _tree_memory(child.pid))
                if limit_s is not None and time.perf_counter() - started > limit_s and not killed:
                    os.killpg(child.pid, signal.SIGKILL)  # the whole group: workers too
                    killed = True
                time.sleep(SAMPLE_INTERVAL_S)
        except BaseException:  # Ctrl-C here: the child is in its own session and would live on
            os.killpg(child.pid, signal.SIGKILL)
            os.wait4(child.pid, 0)
            raise
    child.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    stdout, stderr = stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
    peak = max(usage.ru_maxrss * 1024, peak_tree)  # ru_maxrss is in KiB on Linux
    record = {"command": command, "returncode": code, "process_wall_s": round(wall, 3),
              "peak_rss_bytes": peak, "peak_rss_gb": round(peak / 1e9, 3),
              "ru_maxrss_bytes": usage.ru_maxrss * 1024, "sampled_tree_peak_bytes": peak_tree,
              "stdout_log": str(stdout_path), "stderr_log": str(stderr_path)}
    if killed:
        record["status"] = "timeout"
        limit = f"{limit_s / 60:g} min" if limit_s % 60 == 0 else f"{limit_s:g} s"
        record["failure"] = f"did not finish within {limit} (killed)"
    elif code == 0 and "\nRESULT " in "\n" + stdout:
        record["status"] = "ok"
        line = next(l for l in reversed(stdout.splitlines()) if l.startswith("RESULT "))
        record["result"] = json.loads(line[len("RESULT "):])
        return record
    elif "MemoryError" in stderr:
        record["status"] = "memory_error"
        record["failure"] = "MemoryError"
    elif code == -signal.SIGKILL:
        record["status"] = "killed"
        record["failure"] = "killed by SIGKILL, not by this script (the kernel's OOM killer?)"
    else:
        record["status"] = "error"
        record["failure"] = f"exited with {code}"
    record["stderr_tail"] = stderr[-3000:]
    record["stdout_tail"] = stdout[-1500:]
    return record


def child_datalab(embeddings: Path, dataset: Path, probs: Path, classes: list[str], issues_out: Path) -> dict:
    """Child: ``Datalab.find_issues`` on the embeddings and our out-of-fold probabilities."""
    started = time.perf_counter()
    import cleanlab
    from cleanlab import Datalab
    import_s = time.perf_counter() - started

    started = time.perf_counter()
    features = np.load(embeddings)
    pred_probs = np.load(probs)
    labels = pd.Categorical(pd.read_parquet(dataset, columns=["label"])["label"], categories=classes).codes
    # Integer labels in our class order, so Datalab's class indices are the probabilities' columns.
    labels = labels.astype(np.int64)
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    lab = Datalab(data={"label": labels}, label_name="label")
    construct_s = time.perf_counter() - started
    started = time.perf_counter()
    lab.find_issues(features=features, pred_probs=pred_probs,
                    issue_types={name: {} for name in DATALAB_ISSUE_TYPES})
    find_s = time.perf_counter() - started

    summary = lab.get_issue_summary()
    issues = lab.get_issues()
    issues.to_parquet(issues_out)
    statistics = lab.get_info("statistics")
    graph = statistics.get("weighted_knn_graph")
    metric = statistics.get("knn_metric")
    return {
        "cleanlab": cleanlab.__version__,
        "import_s": round(import_s, 3), "load_s": round(load_s, 3),
        "construct_s": round(construct_s, 3), "find_issues_s": round(find_s, 3),
        "datalab_s": round(construct_s + find_s, 3),
        "issue_types_requested": list(DATALAB_ISSUE_TYPES),
        "issue_types_run": summary["issue_type"].tolist(),
        "summary": summary.to_dict(orient="records"),
        "knn_metric": metric if isinstance(metric, str) else repr(metric),
        "knn_neighbors": int(graph.nnz // graph.shape[0]) if graph is not None else None,
        "issue_columns": issues.columns.tolist(),
    }


def child_umap(embeddings: Path, coords_out: Path) -> dict:
    """Child: umap-learn with its defaults, after a warm-up fit that pays numba's compile."""
    started = time.perf_counter()
    import umap
    import_s = time.perf_counter() - started

    features = np.load(embeddings)
    started = time.perf_counter()
    warm, _ = ClusterModel(features.shape[1], seed=12345).chunk(0, WARMUP_ROWS, 1)
    umap.UMAP().fit_transform(warm)
    warmup_s = time.perf_counter() - started
    print(f"[peers] umap-learn warm-up done in {warmup_s:.1f} s", file=sys.stderr, flush=True)

    started = time.perf_counter()
    reducer = umap.UMAP()
    coords = reducer.fit_transform(features)
    fit_s = time.perf_counter() - started
    np.save(coords_out, coords.astype(np.float32))
    return {"umap_learn": umap.__version__, "import_s": round(import_s, 3), "numba_warmup_s": round(warmup_s, 3),
            "fit_transform_s": round(fit_s, 3),
            "params": {k: repr(v) for k, v in reducer.get_params().items()}}


def child_main(argv: list[str]) -> int:
    """Entry point of ``peers.py child datalab|umap ...`` (run by :func:`run_limited`)."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(prog="peers.py child")
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--dataset", type=Path)
    parser.add_argument("--probs", type=Path)
    parser.add_argument("--classes")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.peer == "datalab":
        report = child_datalab(args.embeddings, args.dataset, args.probs, json.loads(args.classes), args.out)
    else:
        report = child_umap(args.embeddings, args.out)
    print("RESULT " + json.dumps(report), flush=True)
    return 0


# ----------------------------------------------------------------------------- figures


def score_directions(manifest: dict) -> dict[str, float]:
    """Each score column's sign such that ``sign * column`` is higher for likelier issues.

    Read from the manifest's ``scores``: each family's ``direction`` text, such as
    ``"label_quality: lower = likely label error; label_issue is a flag"`` or
    ``"higher = harder"`` (for all its columns). Flags count as higher = flagged.
    """
    signs: dict[str, float] = {}
    for family in manifest.get("scores", {}).values():
        columns = family["columns"]
        for part in family.get("direction", "").split(";"):
            part = part.strip()
            if "is a flag" in part:
                signs[part.split()[0]] = 1.0
                continue
            names, text = part.split(":", 1) if ":" in part else ("", part)
            if not all(name.strip() in columns for name in names.split(",")):
                names, text = ",".join(columns), part  # a colon inside the text, e.g. "(negative: harmful)"
            words = re.findall(r"\b(lower|higher)\b", text)
            if not words:
                continue
            for name in (n.strip() for n in names.split(",")):
                if name in columns:
                    signs[name] = -1.0 if words[0] == "lower" else 1.0
    return signs


def auroc(flipped: np.ndarray, values, sign: float) -> float | None:
    """AUROC of ``sign * values`` at ranking the flipped rows first; None if not computable."""
    from sklearn.metrics import roc_auc_score

    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if keep.sum() < 2 or len(np.unique(flipped[keep])) < 2:
        return None
    return round(float(roc_auc_score(flipped[keep], sign * values[keep])), 4)


def flag_quality(flipped: np.ndarray, flags) -> dict:
    """Precision and recall of a boolean issue flag against the flipped rows."""
    flags = np.asarray(flags, dtype=bool)
    hits = int((flags & flipped).sum())
    return {"flagged": int(flags.sum()), "precision": round(hits / max(1, flags.sum()), 4),
            "recall": round(hits / max(1, flipped.sum()), 4)}


def trust(vectors: np.ndarray, coords: np.ndarray) -> float:
    """Trustworthiness of a 2-D map: cosine distances on ``vectors``, 15 neighbours."""
    from sklearn.manifold import trustworthiness

    return round(float(trustworthiness(vectors, coords, n_neighbors=TRUST_NEIGHBORS, metric=TRUST_METRIC)), 4)


# ----------------------------------------------------------------------------- one size


def run_ours(dataset: Path, embeddings: Path, folder: Path) -> dict:
    """Our full analysis with scores, as ``map_speed.py --with-scores`` runs it (no time limit)."""
    from analytics.pipeline import AnalysisConfig

    run_dir, workspace = folder / "ours_run", folder / "ours_workspace"
    for path in (run_dir, workspace):
        shutil.rmtree(path, ignore_errors=True)
    n = int(np.load(embeddings, mmap_mode="r").shape[0])
    command = [sys.executable, str(BENCH / "_run_analysis.py"), "--dataset", str(dataset),
               "--embeddings", str(embeddings), "--out", str(run_dir), "--workspace", str(workspace),
               "--with-scores"]
    if n > AnalysisConfig().umap_fit_max:
        command.append("--warmup-transform")
    record = run_limited(command, logs=folder / "logs" / "ours", limit_s=None)
    shutil.rmtree(workspace, ignore_errors=True)
    record["run_dir"] = str(run_dir)
    if record["status"] == "ok":
        result, timings = record["result"], record["result"]["timings_s"]
        record["full_run_s"] = result["ready_s"]
        record["knn_s"] = timings["neighbors"]
        record["knn_plus_scores_s"] = round(timings["neighbors"] + timings["scores"], 3)
        record["score_stages_s"] = round(sum(timings.get(s, 0.0) for s in
                                             ("neighbors", "dynamics", "heldout", "scores")), 3)
        record["projection_s"] = round(timings["neighbors"] + timings.get("umap", 0.0), 3)
    return record


def ours_figures(record: dict, dataset: Path, flipped: np.ndarray) -> None:
    """Add each of our scores' AUROC and the label-issue flag's precision/recall to ``record``."""
    run_dir = Path(record["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    examples = pd.read_parquet(run_dir / "examples.parquet")
    ids = pd.read_parquet(dataset, columns=["id"])["id"]
    if not examples["id"].reset_index(drop=True).equals(ids.reset_index(drop=True)):
        raise RuntimeError(f"{run_dir}: rows are not in the dataset's order")
    signs = score_directions(manifest)
    record["score_signs"] = signs
    record["auroc"] = {column: auroc(flipped, examples[column], sign)
                       for column, sign in signs.items() if column in examples}
    if "label_issue" in examples:
        record["label_issue_flag"] = flag_quality(flipped, examples["label_issue"])


def run_datalab(dataset: Path, embeddings: Path, folder: Path, ours: dict, limit_s: float) -> dict:
    run_dir = Path(ours["run_dir"])
    classes = json.loads((run_dir / "manifest.json").read_text())["dataset"]["classes"]
    issues_path = folder / "datalab_issues.parquet"
    issues_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "child", "datalab",
               "--embeddings", str(embeddings), "--dataset", str(dataset),
               "--probs", str(run_dir / "heldout_probs.npy"), "--classes", json.dumps(classes),
               "--out", str(issues_path)]
    record = run_limited(command, logs=folder / "logs" / "datalab", limit_s=limit_s)
    errors = re.findall(r"^Error in (\w+): (.*)$", Path(record["stdout_log"]).read_text(errors="replace"), re.M)
    record["issue_type_errors"] = {name: message for name, message in errors}
    if record["status"] == "ok":
        result = record["result"]
        record["datalab_s"] = result["datalab_s"]
        record["issue_counts"] = {row["issue_type"]: int(row["num_issues"]) for row in result["summary"]}
        # find_issues catches an issue type's exception, prints it and goes on without it.
        record["issue_types_failed"] = [name for name in DATALAB_ISSUE_TYPES if name not in record["issue_counts"]]
    return record


def datalab_figures(record: dict, flipped: np.ndarray, folder: Path) -> None:
    issues = pd.read_parquet(folder / "datalab_issues.parquet")
    record["auroc"] = {column: auroc(flipped, issues[column], -1.0)  # Datalab: lower score = issue
                       for column in issues.columns if column.endswith("_score")}
    if "is_label_issue" in issues:
        record["label_issue_flag"] = flag_quality(flipped, issues["is_label_issue"])


def run_umap(embeddings: Path, folder: Path, limit_s: float) -> dict:
    coords_path = folder / "umap_learn_coords.npy"
    coords_path.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "child", "umap",
               "--embeddings", str(embeddings), "--out", str(coords_path)]
    record = run_limited(command, logs=folder / "logs" / "umap", limit_s=limit_s)
    record["coords"] = str(coords_path)
    if record["status"] == "ok":
        record["fit_transform_s"] = record["result"]["fit_transform_s"]
    return record


def trust_figures(entry: dict, embeddings: Path, sample: int, seed: int) -> None:
    """Trustworthiness of our map and umap-learn's on the same seeded sample of rows."""
    vectors = np.load(embeddings, mmap_mode="r")
    n = vectors.shape[0]
    rows = np.sort(np.random.default_rng([seed, 3]).choice(n, size=min(sample, n), replace=False))
    original = np.asarray(vectors[rows], dtype=np.float32)
    entry["trust_sample"] = {"rows": int(len(rows)), "seed": [seed, 3], "n_neighbors": TRUST_NEIGHBORS,
                             "metric": TRUST_METRIC}
    ours = entry["ours"]
    if ours["status"] == "ok":
        examples = pd.read_parquet(Path(ours["run_dir"]) / "examples.parquet", columns=["x", "y"])
        ours["trustworthiness"] = trust(original, examples[["x", "y"]].to_numpy()[rows])
    peer = entry.get("umap")
    if peer and peer["status"] == "ok":
        peer["trustworthiness"] = trust(original, np.load(peer["coords"])[rows])


# ----------------------------------------------------------------------------- report


def _fmt(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _failed(record: dict | None) -> str | None:
    """A table cell for a peer that did not run or did not finish, else None."""
    if record is None:
        return "not run"
    if record.get("status") == "skipped":
        return record["failure"]
    if record["status"] != "ok":
        return f"{record['failure']}; peak {record['peak_rss_gb']:.1f} GB after {record['process_wall_s']:.0f} s"
    return None


def markdown(results: dict) -> str:
    """Markdown tables of the results."""
    sizes = results["sizes"]
    lines = ["### Scores: ours vs cleanlab Datalab (same features, same out-of-fold probabilities)", "",
             "| n | ours full run s | ours kNN s | ours kNN + scores s | ours score stages s | ours peak GB "
             "| Datalab s | Datalab peak GB | **Datalab ÷ ours kNN + scores** | Datalab ÷ ours score stages "
             "| Datalab issues (label / outlier / near-dup / valuation) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for entry in sizes:
        ours, lab = entry["ours"], entry.get("datalab")
        if ours["status"] != "ok":
            lines.append(f"| {entry['n']:,} | {_failed(ours)} | | | | | | | | | |")
            continue
        head = (f"| {entry['n']:,} | {ours['full_run_s']:.1f} | {ours['knn_s']:.1f} | {ours['knn_plus_scores_s']:.1f} | "
                f"{ours['score_stages_s']:.1f} | {ours['peak_rss_gb']:.2f} | ")
        failure = _failed(lab)
        if failure:
            lines.append(head + f"{failure} | | | | |")
            continue
        counts, errors = lab["issue_counts"], lab["issue_type_errors"]
        issue_text = " / ".join(
            format(counts[name], ",") if name in counts
            else f"failed ({errors.get(name, 'no result')[:60]})" for name in DATALAB_ISSUE_TYPES)
        lines.append(head + f"{lab['datalab_s']:.1f} | {lab['peak_rss_gb']:.2f} | "
                     f"**{lab['datalab_s'] / ours['knn_plus_scores_s']:.1f}×** | "
                     f"{lab['datalab_s'] / ours['score_stages_s']:.2f}× | {issue_text} |")

    lines += ["", "### AUROC at finding the planted 5% label flips (oriented: higher = more likely flipped)", "",
              "| score | " + " | ".join(f"{e['n']:,}" for e in sizes) + " |",
              "|---|" + "---:|" * len(sizes)]
    rows: dict[str, list] = {}
    for column in ("label_score", "data_valuation_score", "outlier_score", "near_duplicate_score"):
        rows[f"Datalab `{column}` (lower = issue)"] = [
            (e.get("datalab") or {}).get("auroc", {}).get(column) for e in sizes]
    columns = [c for e in sizes for c in e["ours"].get("auroc", {})]
    for column in dict.fromkeys(columns):
        sign = next(e["ours"]["score_signs"][column] for e in sizes if column in e["ours"].get("score_signs", {}))
        rows[f"ours `{column}` ({'higher' if sign > 0 else 'lower'} = issue)"] = [
            e["ours"].get("auroc", {}).get(column) for e in sizes]
    for name, values in rows.items():
        if any(v is not None for v in values):
            lines.append(f"| {name} | " + " | ".join(_fmt(v, ".4f") for v in values) + " |")
    lines += ["", "| label-issue flag: flagged / precision / recall | " + " | ".join(
        f"{e['n']:,}" for e in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for name, key in (("Datalab `is_label_issue`", "datalab"), ("ours `label_issue`", "ours")):
        cells = []
        for e in sizes:
            flag = (e.get(key) or {}).get("label_issue_flag")
            cells.append("–" if not flag else f"{flag['flagged']:,} / {flag['precision']:.3f} / {flag['recall']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    sample = next((e["trust_sample"]["rows"] for e in sizes if "trust_sample" in e), None)
    lines += ["", f"### Map: ours vs umap-learn defaults (trustworthiness: {TRUST_NEIGHBORS} neighbours, "
              f"cosine on the 384-d vectors, same seeded sample of {_fmt(sample, ',')} rows)", "",
              "| n | ours kNN + UMAP s | ours trustworthiness | umap-learn s | umap-learn trustworthiness "
              "| umap-learn peak GB | **umap-learn ÷ ours** | umap-learn numba warm-up s (not timed) |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in sizes:
        ours, peer = entry["ours"], entry.get("umap")
        head = (f"| {entry['n']:,} | {_fmt(ours.get('projection_s'))} | "
                f"{_fmt(ours.get('trustworthiness'), '.4f')} | ")
        failure = _failed(peer)
        if failure:
            lines.append(head + f"{failure} | | | | | |")
            continue
        ratio = peer["fit_transform_s"] / ours["projection_s"] if ours.get("projection_s") else None
        lines.append(head + f"{peer['fit_transform_s']:.1f} | {_fmt(peer.get('trustworthiness'), '.4f')} | "
                     f"{peer['peak_rss_gb']:.2f} | **{_fmt(ratio)}×** | "
                     f"{peer['result']['numba_warmup_s']:.1f} |")
    return "\n".join(lines)


def full_machine_info() -> dict:
    import platform

    import psutil

    info = machine_info()
    info["memory_bytes"] = psutil.virtual_memory().total
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in
                                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor()
    return info


def _versions() -> dict:
    from importlib import metadata

    names = ("numpy", "pandas", "scikit-learn", "cleanlab", "datasets", "umap-learn", "pynndescent", "numba",
             "torch")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def main(argv: list[str] | None = None) -> int:
    command = [sys.executable, *sys.argv] if argv is None else ["bench/peers.py", *argv]
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="per peer run; a peer still running then is killed (our run has no limit)")
    parser.add_argument("--out", type=Path, default=BENCH / "results",
                        help="results folder: peers.json, data/ (cached inputs) and peers/ (runs, logs)")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--sample", type=int, default=5000, help="rows for trustworthiness (seeded)")
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = args.out.resolve()
    results = {
        "benchmark": "peers", "machine": full_machine_info(), "versions": _versions(),
        "command": command,
        "options": {"sizes": args.sizes, "max_seconds": args.max_seconds, "peers": args.peers,
                    "sample": args.sample, "dims": args.dims, "seed": args.seed},
        "generator": {"version": GENERATOR_VERSION, "clusters": N_CLUSTERS, "classes": N_CLASSES,
                      "label_noise": LABEL_NOISE, "truth": "replayed from the generator's random stream"},
        "notes": {
            "ours": "bench/_run_analysis.py --with-scores in a fresh workspace; full run s = load + run_analysis; "
                    "numba warm-up excluded (own column); no time limit",
            "ours_knn_plus_scores_s": "neighbors + scores stages: the work Datalab repeats when handed "
                                      "the same out-of-fold probabilities",
            "ours_score_stages_s": "neighbors + dynamics + heldout + scores: everything behind the score columns, "
                                   "including the probe that makes the probabilities Datalab is given",
            "datalab_s": "Datalab(data) + find_issues(features, pred_probs, issue_types); import and loading excluded",
            "datalab_knn": "Datalab builds one exact kNN graph (k=10, cosine: scikit-learn NearestNeighbors, brute "
                           "force) shared by outlier, near_duplicate and data_valuation; label uses pred_probs only",
            "datalab_data_valuation": "cleanlab 2.9's KNN-Shapley allocates dense n x n float64 arrays (and loops "
                                      "over examples in Python); find_issues reports its failure and goes on",
            "umap": "umap.UMAP().fit_transform(X) with every default (euclidean on L2-normalised vectors, "
                    "the same ranking as cosine); warm-up fit on 6,000 synthetic points first, not timed",
            "ours_projection_s": "neighbors + umap stages of our run",
            "trustworthiness": f"sklearn.manifold.trustworthiness(n_neighbors={TRUST_NEIGHBORS}, "
                               f"metric='{TRUST_METRIC}') on one seeded sample of rows, original vectors vs x, y",
            "peak_rss": "max of the kernel's ru_maxrss (os.wait4) and RSS + descendants' USS sampled every 0.2 s",
        },
        "sizes": [],
    }
    failed: dict[str, dict] = {}  # peer -> the size and record at which it failed
    for n in sorted(args.sizes):  # a peer that fails is not tried at larger sizes
        folder = out / "peers" / f"n{n}"
        print(f"== n = {n:,}: data", file=sys.stderr, flush=True)
        started = time.perf_counter()
        dataset, embeddings = generate(out / "data" / f"n{n}_d{args.dims}_s{args.seed}", n, args.dims, args.seed)
        flipped = planted_flips(dataset, n, args.dims, args.seed)
        entry = {"n": n, "data_s": round(time.perf_counter() - started, 2), "flipped": int(flipped.sum())}
        size_started = time.perf_counter()

        print(f"== n = {n:,}: ours", file=sys.stderr, flush=True)
        entry["ours"] = run_ours(dataset, embeddings, folder)
        if entry["ours"]["status"] == "ok":
            ours_figures(entry["ours"], dataset, flipped)

        for peer in args.peers:
            if peer in failed:
                entry[peer] = {"status": "skipped", "failure": f"not tried (failed at {failed[peer]['n']:,})"}
                continue
            if peer == "datalab" and entry["ours"]["status"] != "ok":
                entry[peer] = {"status": "skipped", "failure": "not tried (our run, which gives its probabilities, failed)"}
                continue
            print(f"== n = {n:,}: {peer}", file=sys.stderr, flush=True)
            if peer == "datalab":
                entry[peer] = run_datalab(dataset, embeddings, folder, entry["ours"], args.max_seconds)
                if entry[peer]["status"] == "ok":
                    datalab_figures(entry[peer], flipped, folder)
            else:
                entry[peer] = run_umap(embeddings, folder, args.max_seconds)
            if entry[peer]["status"] != "ok":
                failed[peer] = {"n": n}
                print(f"   {peer} failed: {entry[peer]['failure']}", file=sys.stderr, flush=True)

        trust_figures(entry, embeddings, args.sample, args.seed)
        entry["size_wall_s"] = round(time.perf_counter() - size_started, 1)
        results["sizes"].append(entry)
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers.json").write_text(json.dumps(results, indent=2))  # after every size
        print(f"== n = {n:,}: done in {entry['size_wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(markdown(results))
    print(f"\nwrote {out / 'peers.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
