"""Benchmark: the image checks' one pass over the files, batched against the per-image reference.

The image checks (:mod:`analytics.data_issues.images`) read every image file once for its byte
hash, its perceptual hash and CleanVision's properties. ``read_images`` now measures the images
in batches (:func:`~analytics.data_issues.images.measure_images`); the per-image reference
(:func:`~analytics.data_issues.images.measure_image` on each file, in the same thread pool, as
``read_images`` did before) is kept and timed beside it.

**Files.** ``--n`` synthetic images (32×32 RGB PNG by default, CIFAR-sized; ``--size 64``,
``--format jpeg``), photo-like: a random two-colour gradient with noise, 5% each darkened,
lightened, blurred (3×3 box, twice) or greyscale (equal channels). They are written by two
processes under ``--work`` (default: a temporary folder, deleted at the end unless ``--keep``),
10,000 per sub-folder, and read with a warm page cache (just written).

**Timings**, each in a fresh child process so that its peak memory is its own:

- ``new``: ``read_images`` on all ``--n`` files;
- ``reference``: the per-image path on the first ``--reference-n`` files (it is slow), projected
  linearly to ``--n`` and to 1M;
- ``equal``: both paths on the first ``--check-n`` files, compared (raw properties: largest
  absolute difference; perceptual and byte hashes: count of differences);
- ``all_checks`` (``--all-checks``): ``check_dataset`` with every check on the ``--n`` images
  and a synthetic n × 15 kNN graph (``bench.near_duplicates.synthetic_graph``): the issue's
  target is that all data-issue checks together add ≤ 60 s at 1M and no extra peak memory.

Each reports wall seconds, CPU seconds of the child (all its threads), the load average before
and after (the machine may be shared: CPU time is the steadier figure) and the resident memory
added above the child's baseline after imports and the list of paths (sampled every 0.05 s).

Results: ``bench/results/image_checks.json``; a Markdown summary on stdout.

Usage::

    .venv/bin/python bench/image_checks.py --n 100000
    .venv/bin/python bench/image_checks.py --n 1000000 --all-checks
    .venv/bin/python bench/image_checks.py --n 20000 --size 64 --format jpeg
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.map_speed import machine_info  # noqa: E402

PER_FOLDER = 10_000
ONE_MILLION = 1_000_000


# ----------------------------------------------------------------------------- files


def synthetic_pixels(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` photo-like RGB images (uint8, (count, size, size, 3)): a two-colour gradient
    along a random direction plus noise; 5% each darkened, lightened, blurred or greyscale."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    angle = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    ramp = (np.cos(angle) * x + np.sin(angle) * y + 1.5) / 3  # in [0, 1]
    first, second = rng.uniform(0, 255, (2, count, 1, 1, 3))
    pixels = first + (second - first) * ramp[..., None] + rng.normal(0, 12, (count, size, size, 3))
    kind = rng.choice(5, size=count, p=[0.8, 0.05, 0.05, 0.05, 0.05])
    pixels[kind == 1] *= 0.15
    pixels[kind == 2] = 255 - (255 - pixels[kind == 2]) * 0.1
    for _ in range(2):
        blurred = pixels[kind == 3]
        padded = np.pad(blurred, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        pixels[kind == 3] = sum(padded[:, dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)) / 9
    pixels[kind == 4] = pixels[kind == 4].mean(axis=3, keepdims=True)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write_folder(folder: Path, start: int, count: int, size: int, image_format: str, seed: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = synthetic_pixels(count, size, np.random.default_rng([seed, start]))
    suffix = "png" if image_format == "png" else "jpg"
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"img_{start + i:07d}.{suffix}",
                                    **({"quality": 90} if image_format == "jpeg" else {}))


def write_files(root: Path, n: int, size: int, image_format: str, seed: int) -> list[str]:
    """Write (or reuse) ``n`` files under ``root``, ``PER_FOLDER`` to a sub-folder."""
    suffix = "png" if image_format == "png" else "jpg"
    jobs = []
    for start in range(0, n, PER_FOLDER):
        folder = root / f"{start // PER_FOLDER:04d}"
        count = min(PER_FOLDER, n - start)
        if not (folder / f"img_{start + count - 1:07d}.{suffix}").exists():
            jobs.append((folder, start, count))
    if jobs:
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(_write_folder, *zip(*jobs), *([value] * len(jobs) for value in (size, image_format, seed))))
    return [str(root / f"{i // PER_FOLDER:04d}" / f"img_{i:07d}.{suffix}") for i in range(n)]


def folder_bytes(root: Path) -> int:
    """Bytes the files take on disk (blocks, not their lengths)."""
    return sum(entry.stat().st_blocks * 512 for folder in root.iterdir() if folder.is_dir()
               for entry in os.scandir(folder))


# ----------------------------------------------------------------------------- children


def reference_read(paths: list[str], *, phash: bool = True, chunk: int = 256):
    """``read_images`` as it was before the batched path: ``measure_image`` on every file, in
    chunks over the same thread pool; returns (byte hashes, perceptual hashes, raw rows)."""
    from PIL import Image

    from analytics.data_issues.images import measure_image

    def measure(part: list[str]) -> list:
        out = []
        for path in part:
            try:
                with open(path, "rb") as handle:
                    out.append(measure_image(handle.read(), phash=phash))
            except (OSError, ValueError, Image.DecompressionBombError):
                out.append(None)
        return out

    results: list = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for part in pool.map(measure, [paths[s:s + chunk] for s in range(0, len(paths), chunk)]):
            results.extend(part)
    empty = (0, 0, (np.nan,) * 7 + (False,))
    return (np.array([(r or empty)[0] for r in results], np.uint64), np.array([(r or empty)[1] for r in results], np.uint64),
            [(r or empty)[2] for r in results])


class PeakMemory:
    """Resident memory sampled every 0.05 s in a thread; ``added_gb`` above the start."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._running.set()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._running.clear()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    def report(self) -> dict:
        return {"rss_before_gb": round(self.baseline / 1e9, 3), "rss_peak_gb": round(self.peak / 1e9, 3),
                "added_peak_gb": round((self.peak - self.baseline) / 1e9, 3)}


def _timed(run) -> dict:
    load_before = os.getloadavg()
    with PeakMemory() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "load_average_before": load_before,
            "load_average_after": os.getloadavg(), **memory.report()}


def _images_dataset(paths: list[str], seed: int):
    import pandas as pd

    from analytics.datasets import ColumnRoles, Dataset

    rng = np.random.default_rng(seed)
    n = len(paths)
    table = pd.DataFrame({"id": pd.array([f"img-{i}" for i in range(n)], dtype="string"),
                          "label": pd.array([f"class_{c}" for c in rng.integers(0, 10, size=n)], dtype="string"),
                          "image": pd.array(paths, dtype="string")})
    return Dataset(name="synthetic-images", source=Path("synthetic.csv"), table=table,
                   classes=tuple(f"class_{c}" for c in range(10)), kind="image", roles=ColumnRoles(),
                   fingerprint="synthetic")


def child(kind: str, paths: list[str], seed: int) -> dict:
    from analytics.data_issues.images import read_images

    n = len(paths)
    if kind == "new":
        read_images(paths[:64])  # imports (scipy.fftpack, imagehash) outside the timing
        out = _timed(lambda: read_images(paths))
    elif kind == "reference":
        reference_read(paths[:64])
        out = _timed(lambda: reference_read(paths))
    elif kind == "equal":
        new = read_images(paths)
        byte_hashes, phashes, rows = reference_read(paths)
        import pandas as pd

        reference = pd.DataFrame(rows, columns=list(new.raw.columns))
        values = [c for c in reference.columns if c != "grayscale"]
        difference = np.abs(new.raw[values].to_numpy(float) - reference[values].to_numpy(float))
        out = {"max_abs_difference": {c: float(np.nanmax(difference[:, i])) for i, c in enumerate(values)},
               "grayscale_differences": int((new.raw["grayscale"].to_numpy() != reference["grayscale"].to_numpy(bool)).sum()),
               "phash_differences": int((new.phashes != phashes).sum()),
               "byte_hash_differences": int((new.byte_hashes != byte_hashes).sum())}
    elif kind == "all_checks":
        from analytics.data_issues import check_dataset
        from bench.near_duplicates import synthetic_graph

        rng = np.random.default_rng(seed)
        dataset = _images_dataset(paths, seed)
        indices, distances = synthetic_graph(n, rng, np.zeros(0, np.int64), np.zeros(0, np.int64),
                                             np.zeros(0, np.float32))
        result: dict = {}

        def run() -> None:
            result["issues"] = check_dataset(dataset, knn_indices=indices, knn_distances=distances, metric="euclidean")

        out = _timed(run)
        summary = result["issues"].summary
        out.update({"timings_s": summary["timings_s"],
                    "counts": {name: entry["count"] for name, entry in summary["issues"].items()}})
    else:
        raise ValueError(f"unknown child {kind!r}")
    return {"kind": kind, "n": n, **out}


def run_child(kind: str, paths_file: Path, n: int, seed: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", kind, "--paths", str(paths_file), "--n", str(n),
                             "--seed", str(seed)], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def per_image(entry: dict) -> dict:
    return {"wall_us_per_image": round(1e6 * entry["seconds"] / entry["n"], 1),
            "cpu_us_per_image": round(1e6 * entry["cpu_seconds"] / entry["n"], 1)}


def markdown(results: dict) -> str:
    lines = [f"Image pass over {results['n']:,} {results['image']} files "
             f"({results['disk_gb']:.2f} GB on disk), {results['machine']['cpus']} CPUs", "",
             "| path | files | wall s | CPU s | µs/image wall | µs/image CPU | projected 1M wall s | added peak GB | load before → after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ("new", "reference"):
        entry = results[name]
        lines.append(f"| {name} | {entry['n']:,} | {entry['seconds']:.1f} | {entry['cpu_seconds']:.1f} | "
                     f"{entry['wall_us_per_image']} | {entry['cpu_us_per_image']} | {entry['projected_1m_wall_s']:.0f} | "
                     f"{entry['added_peak_gb']:.3f} | {entry['load_average_before'][0]:.1f} → "
                     f"{entry['load_average_after'][0]:.1f} |")
    lines += ["", f"Speed-up (CPU): {results['speedup_cpu']:.1f}×; equal on {results['equal']['n']:,} files: "
              f"{json.dumps({k: v for k, v in results['equal'].items() if k not in ('kind', 'n')})}"]
    if "all_checks" in results:
        entry = results["all_checks"]
        lines += ["", f"All data-issue checks on {entry['n']:,} images: {entry['seconds']:.1f} s wall, "
                  f"{entry['cpu_seconds']:.1f} s CPU, +{entry['added_peak_gb']:.3f} GB; stages {entry['timings_s']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="image files (new path, all checks)")
    parser.add_argument("--reference-n", type=int, default=10_000, help="files for the per-image reference")
    parser.add_argument("--check-n", type=int, default=2_000, help="files on which both paths are compared")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--all-checks", action="store_true", help="also time check_dataset with every check")
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "image_checks.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--paths", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        paths = args.paths.read_text().splitlines()[:args.n]
        print(json.dumps(child(args.child, paths, args.seed)))
        return 0

    from analytics.workspace import atomic_write_text

    work = args.work or Path(tempfile.mkdtemp(prefix="image_checks_"))
    root = work / f"{args.format}_{args.size}"
    try:
        start = time.perf_counter()
        paths = write_files(root, args.n, args.size, args.format, args.seed)
        written_s = time.perf_counter() - start
        paths_file = work / "paths.txt"
        paths_file.write_text("\n".join(paths))
        results: dict = {"machine": machine_info(), "n": args.n, "image": f"{args.size}×{args.size} RGB {args.format.upper()}",
                         "write_s": round(written_s, 1), "disk_gb": round(folder_bytes(root) / 1e9, 3)}
        results["equal"] = run_child("equal", paths_file, min(args.check_n, args.n), args.seed)
        for name, n in (("reference", min(args.reference_n, args.n)), ("new", args.n)):
            entry = run_child(name, paths_file, n, args.seed)
            entry.update(per_image(entry))
            entry["projected_1m_wall_s"] = round(entry["seconds"] * ONE_MILLION / n, 1)
            entry["projected_1m_cpu_s"] = round(entry["cpu_seconds"] * ONE_MILLION / n, 1)
            results[name] = entry
        results["speedup_cpu"] = round(results["reference"]["cpu_us_per_image"] / results["new"]["cpu_us_per_image"], 2)
        results["speedup_wall"] = round(results["reference"]["wall_us_per_image"] / results["new"]["wall_us_per_image"], 2)
        if args.all_checks:
            results["all_checks"] = run_child("all_checks", paths_file, args.n, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(work if args.work is None else root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
