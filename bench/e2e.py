"""Benchmark: the whole headless analysis of a 1M × 384 embedding file, as a user runs it.

Targets (issue 8), on the 2-core reference machine: ``cartographer analyze`` completes every
stage — kNN, UMAP, clusters, probe dynamics, every score — in at most 10 minutes with peak
memory under 8 GB; a second run on the same workspace resumes from the stage caches.

The script

1. generates the seeded synthetic data of ``bench/map_speed.py`` (1M × 384 float32 embeddings,
   10 classes over 50 clusters, 5% planted label noise; cached under ``--data``);
2. runs ``cartographer analyze DATASET --embeddings FILE --out RUN`` in a child process with a
   fresh workspace (``CARTOGRAPHER_WORKSPACE``), timing it from the outside (the wall clock of the
   whole command: imports, loading, every stage, writing the artefacts) and reading its peak RSS
   from the kernel (``os.wait4``), while a sampler records the RSS every 0.2 s; the command's
   progress lines are kept with their times;
3. runs the same command again on the same workspace: every stage comes from the cache;
4. loads the run folder as the app does (``load_run`` with checksum verification).

Results go to ``--out/e2e_<n>.json``; a Markdown summary is printed.

Usage::

    .venv/bin/python bench/e2e.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import generate, machine_info  # noqa: E402

TARGET_S = 600.0
TARGET_RSS = 8e9


def _rss_tree(pid: int) -> int:
    import psutil

    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


def run_command(command: list[str], env: dict, log: Path) -> dict:
    """Run ``command``; return its wall time, exit code, kernel peak RSS and sampled peak RSS."""
    started = time.perf_counter()
    lines: list[str] = []
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, bufsize=1)
    peak = {"rss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _rss_tree(child.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with log.open("w") as handle:
        for line in child.stdout:
            stamped = f"{time.perf_counter() - started:8.1f}s {line.rstrip()}"
            lines.append(stamped)
            handle.write(stamped + "\n")
            handle.flush()
            print(stamped, file=sys.stderr, flush=True)
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    sampler.join()
    return {"wall_s": round(time.perf_counter() - started, 1),
            "exit_code": os.waitstatus_to_exitcode(status),
            "peak_rss_bytes": usage.ru_maxrss * 1024,
            "sampled_peak_rss_bytes": peak["rss"],
            "progress_lines": len(lines), "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=REPO / "bench" / "results" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cartographer-e2e"),
                        help="run folder and workspace (emptied first)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--no-resume", action="store_true", help="skip the second (cached) run")
    parser.add_argument("extra", nargs="*", help="extra arguments for cartographer analyze (after --)")
    args = parser.parse_args(argv)

    dataset, embeddings = generate(args.data / f"n{args.n}_d{args.dims}_s{args.seed}", args.n, args.dims, args.seed)
    shutil.rmtree(args.work, ignore_errors=True)
    run_dir, workspace = args.work / "run", args.work / "workspace"
    workspace.mkdir(parents=True)
    cli = Path(sys.executable).with_name("cartographer")
    command = [str(cli), "analyze", str(dataset), "--embeddings", str(embeddings), "--out", str(run_dir),
               *args.extra]
    env = {**os.environ, "CARTOGRAPHER_WORKSPACE": str(workspace)}
    print("$ " + " ".join(command), file=sys.stderr)
    first = run_command(command, env, args.work / "first.log")
    if first["exit_code"] != 0:
        print(f"the analysis failed (exit {first['exit_code']}); see {first['log']}", file=sys.stderr)
        return 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    second = None if args.no_resume else run_command(command, env, args.work / "second.log")

    from analytics.pipeline import load_run

    started = time.perf_counter()
    run = load_run(run_dir)
    open_s = time.perf_counter() - started
    result = {
        "benchmark": "e2e", "machine": machine_info(), "n": args.n, "dims": args.dims, "seed": args.seed,
        "command": "CARTOGRAPHER_WORKSPACE=<fresh> " + " ".join(command),
        "targets": {"wall_s": TARGET_S, "peak_rss_bytes": TARGET_RSS},
        "first_run": first, "second_run": second,
        "stage_timings_s": manifest["timings_s"],
        "second_run_stage_timings_s": (json.loads((run_dir / "manifest.json").read_text())["timings_s"]
                                       if second else None),
        "knn": manifest["neighbors"], "projection": manifest["projection"],
        "dynamics": {k: v for k, v in (manifest["dynamics"] or {}).items() if k != "notes"},
        "clusters": {k: manifest["clusters"].get(k) for k in ("k", "n_fine", "uniformity")} if manifest["clusters"] else None,
        "score_columns": manifest["score_columns"],
        "artefact_bytes": {name: info["bytes"] for name, info in manifest["artefacts"].items()},
        "load_run_s": round(open_s, 2), "rows_loaded": len(run.examples),
        "passed": {"wall": first["wall_s"] <= TARGET_S, "memory": first["peak_rss_bytes"] < TARGET_RSS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"e2e_{args.n}.json"
    path.write_text(json.dumps(result, indent=2))
    stages = " · ".join(f"{k} {v:.0f}" for k, v in manifest["timings_s"].items() if k != "total")
    print(f"\n## End to end, {args.n:,} × {args.dims}\n")
    print(f"- `cartographer analyze`: **{first['wall_s']:.0f} s** wall (target {TARGET_S:.0f}), "
          f"peak RSS **{first['peak_rss_bytes'] / 1e9:.2f} GB** (target {TARGET_RSS / 1e9:.0f})")
    print(f"- stages (s): {stages}")
    if second:
        print(f"- second run on the same workspace (every stage cached): {second['wall_s']:.0f} s")
    print(f"- kNN recall {manifest['neighbors']['recall']}, UMAP start {manifest['projection'].get('init')}, "
          f"dynamics scheme {manifest['dynamics'].get('scheme') if manifest['dynamics'] else None}")
    print(f"- run folder opened and verified in {open_s:.1f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
