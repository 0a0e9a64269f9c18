"""Benchmark: the full analysis of precomputed embeddings against umap-learn's default projection.

Issue 14's budget: the full analysis of 100k precomputed 384-d embeddings must take at most
1.3× as long as umap-learn's default ``UMAP().fit_transform``, both timed as whole processes in
one run.

On the same seeded data (``bench/map_speed.py``'s generator, 50 clusters, 10 classes) the script
times four child processes, each from the outside (wall clock of the whole process: interpreter
start, imports, numba compilation or cache loading, loading the data, the work; CPU time of the
process and its threads and peak RSS from the kernel, ``os.wait4``):

1. ``umap`` cold: ``umap.UMAP().fit_transform(np.load(embeddings))`` with an empty numba cache;
2. ``analyze`` cold: ``cartographer analyze DATASET --embeddings FILE --out RUN`` in a fresh
   workspace (so its numba cache, ``<workspace>/numba-cache``, is empty and no stage is cached);
3. ``umap`` warm: the same as 1 with the numba cache 1 left behind;
4. ``analyze`` warm: a fresh workspace again (no stage cached) but ``NUMBA_CACHE_DIR`` pointing at
   the numba cache run 2 left behind.

The ratios analyze / umap (cold and warm; wall and CPU) go to ``--out/analysis_vs_umap.json``
and a Markdown table is printed. The load average is recorded with every run: on a shared
machine the wall-clock ratio is only as good as the load was even, the CPU-time ratio less so.

Usage::

    nice -n 5 .venv/bin/python bench/analysis_vs_umap.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import generate, machine_info  # noqa: E402

TARGET_RATIO = 1.3
UMAP_SCRIPT = """
import sys
import numpy as np
import umap
coords = umap.UMAP().fit_transform(np.load(sys.argv[1]))
assert coords.shape == (len(coords), 2) and np.isfinite(coords).all()
"""


def timed_process(command: list[str], env: dict, log: Path) -> dict:
    """Run ``command`` to completion; wall, CPU and peak RSS of the whole process."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[0]} failed; see {log}:\n{log.read_text()[-2000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2),
            "load_avg_1m": [round(load, 2), round(os.getloadavg()[0], 2)], "log": str(log)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None,
                        help="data, workspaces and numba caches (default: a temporary folder, deleted at the end)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="cartographer-vs-umap-"))
    try:
        dataset, embeddings = generate(work / "data", args.n, args.dims, args.seed)
        base = {key: value for key, value in os.environ.items()
                if key not in ("NUMBA_CACHE_DIR", "CARTOGRAPHER_WORKSPACE")}
        cli = Path(sys.executable).with_name("cartographer")
        umap_cache = work / "umap-numba-cache"
        shutil.rmtree(umap_cache, ignore_errors=True)  # cold means cold, also in a --work folder used before

        def umap_run(label: str) -> dict:
            umap_cache.mkdir(exist_ok=True)
            env = {**base, "NUMBA_CACHE_DIR": str(umap_cache)}
            return timed_process([sys.executable, "-c", UMAP_SCRIPT, str(embeddings)], env,
                                 work / f"umap_{label}.log")

        def analyze_run(label: str, numba_cache: Path | None) -> dict:
            workspace = work / f"workspace_{label}"
            shutil.rmtree(workspace, ignore_errors=True)
            workspace.mkdir()
            env = {**base, "CARTOGRAPHER_WORKSPACE": str(workspace)}
            if numba_cache is not None:
                env["NUMBA_CACHE_DIR"] = str(numba_cache)
            command = [str(cli), "analyze", str(dataset), "--embeddings", str(embeddings),
                       "--out", str(work / f"run_{label}")]
            return timed_process(command, env, work / f"analyze_{label}.log")

        runs, cold_cache = {}, work / "workspace_cold" / "numba-cache"
        for step, run in (("umap cold", lambda: umap_run("cold")),
                          ("analyze cold", lambda: analyze_run("cold", None)),
                          ("umap warm", lambda: umap_run("warm")),
                          ("analyze warm", lambda: analyze_run("warm", cold_cache))):
            print(f"== {step}", file=sys.stderr, flush=True)
            runs[step] = run()
            print(f"   {runs[step]['wall_s']:.1f} s wall, {runs[step]['cpu_s']:.1f} s CPU", file=sys.stderr,
                  flush=True)
            shutil.rmtree(work / "workspace_warm", ignore_errors=True)
        manifest = json.loads((work / "run_cold" / "manifest.json").read_text())
        ratios = {f"{cache}_{clock}": round(runs[f"analyze {cache}"][f"{clock}_s"]
                                            / runs[f"umap {cache}"][f"{clock}_s"], 3)
                  for cache in ("cold", "warm") for clock in ("wall", "cpu")}
        result = {"benchmark": "analysis_vs_umap", "machine": machine_info(), "n": args.n, "dims": args.dims,
                  "seed": args.seed, "target_ratio": TARGET_RATIO, "runs": runs, "ratios": ratios,
                  "analyze_stage_timings_s": manifest.get("timings_s"),
                  "passed": {key: value <= TARGET_RATIO for key, value in ratios.items()}}
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "analysis_vs_umap.json").write_text(json.dumps(result, indent=2))
    print(f"| {args.n:,} × {args.dims} | wall s | CPU s | peak RSS GB | load avg (start, end) |")
    print("|---|---:|---:|---:|---|")
    for step, r in runs.items():
        print(f"| {step} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} | "
              f"{r['load_avg_1m'][0]:.1f}, {r['load_avg_1m'][1]:.1f} |")
    print("\nanalyze / umap: " + ", ".join(f"{key} {value:.2f}×" for key, value in ratios.items())
          + f" (target ≤ {TARGET_RATIO}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
