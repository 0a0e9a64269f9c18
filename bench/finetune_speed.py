"""Benchmark: fine-tuning as a dynamics source (:mod:`analytics.finetune`) on this machine.

Three parts, each optional:

1. ``speed``: seconds per fine-tuning epoch (logits and VoG gradients recorded, as
   ``finetune_dynamics`` runs it) at 1k and 10k examples for text (MiniLM, 96 tokens, batch
   32), tables (the MLP) and images (the small CNN). Each size is a dataset built from a bundled
   sample: the first n rows when the sample has that many, else its rows repeated (with new
   ids) until there are n — the Debian sample's 1,549 texts repeated 6.5 times for 10k. The cost
   of a step does not depend on the values, so duplicates time like new rows. One epoch is
   timed from start to end (``--max-steps`` times only the first steps and scales them to the
   epoch, and says so).
2. ``vog_cost``: the price of the VoG gradient, per training step on the same minibatches:
   no VoG; the input gradient taken in the training pass (what the module does); and a
   separate evaluation pass (forward + input gradient) per epoch.
3. ``samples``: the full default fine-tune (``FinetuneConfig()``) of the three bundled samples,
   with Spearman(confidence, variability), the data-map regions (``compute_scores`` +
   ``assign_regions``), whether the map is two-dimensional (|Spearman| < 0.95), and whether VoG
   is finite. ``--save-dynamics DIR`` writes ``DIR/<sample>/{logits,gold,vog,hidden_norms}.npy``
   and ``meta.json``.

Results go to ``--out/finetune_speed.json`` (parts not run keep their earlier results); a
Markdown summary is printed. ``--threads`` sets torch's thread count (default: torch's own);
the machine's load average is recorded with the results, as a busy machine slows every figure.

Usage::

    .venv/bin/python bench/finetune_speed.py --parts speed vog_cost samples \\
        --save-dynamics /work/notes/finetune_runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_OF = {"text": "debian-packages", "tabular": "breast-cancer", "image": "digits"}
PARTS = ("speed", "vog_cost", "samples")


def _dataset(sample_key: str):
    from analytics.datasets import load_dataset
    from analytics.samples import sample_by_key

    sample = sample_by_key(sample_key)
    return load_dataset(sample.path, roles=sample.roles)


def _sized(dataset, n: int):
    """The first ``n`` rows of ``dataset``, or its rows repeated (new ids) up to ``n``."""
    table = dataset.table
    repeats = -(-n // len(table))
    parts = []
    for copy in range(repeats):
        part = table.copy()
        if copy:
            part["id"] = part["id"].astype(str) + f"~{copy}"
        parts.append(part)
    import pandas as pd

    sized = pd.concat(parts, ignore_index=True).iloc[:n].reset_index(drop=True)
    return replace(dataset, table=sized, fingerprint=f"{dataset.fingerprint}-bench{n}"), repeats > 1


def _epoch_seconds(dataset, config, *, max_steps: int | None) -> dict:
    """One recorded epoch (logits + VoG gradients), timed; or its first ``max_steps`` steps, scaled."""
    from analytics import finetune

    task = finetune._build_task(dataset, config)
    rows = np.arange(dataset.n_examples, dtype=np.int64)
    steps = -(-len(rows) // config.batch_size)
    timed_steps = min(steps, max_steps) if max_steps else steps
    marks = []

    class _Enough(Exception):
        pass

    def progress(fraction, message):
        marks.append(time.perf_counter())
        if len(marks) == timed_steps and timed_steps < steps:
            raise _Enough

    with tempfile.TemporaryDirectory() as folder:  # warm-up: torch's first steps in a process are slow
        finetune._fit(task, dataset.label_codes, rows[:2 * config.batch_size], replace(config, epochs=1),
                      Path(folder), seed=config.seed, record=True, progress=lambda f, m: None, label="warm-up")
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        try:  # one epoch: _fit itself takes any count (the public API asks for two or more)
            finetune._fit(task, dataset.label_codes, rows, replace(config, epochs=1), Path(folder), seed=config.seed,
                          record=True, progress=progress, label="bench")
        except _Enough:
            pass
        ended = marks[timed_steps - 1]
    seconds = ended - began
    return {"seconds_per_epoch": round(seconds * steps / timed_steps, 2), "steps": steps,
            "timed_steps": timed_steps, "extrapolated": timed_steps < steps,
            "seconds_per_step": round(seconds / timed_steps, 4)}


def run_speed(sizes, kinds, max_steps) -> list[dict]:
    from analytics.finetune import FinetuneConfig

    rows = []
    for kind in kinds:
        base = _dataset(SAMPLE_OF[kind])
        for n in sizes:
            dataset, repeated = _sized(base, n)
            config = FinetuneConfig()
            print(f"speed: {kind} n={n:,} ...", flush=True)
            timing = _epoch_seconds(dataset, config, max_steps=max_steps if kind == "text" else None)
            rows.append({"kind": kind, "n": n, "sample": SAMPLE_OF[kind], "repeated": repeated,
                         "model": {"text": "MiniLM, 96 tokens", "tabular": "MLP", "image": "small CNN"}[kind],
                         "batch_size": config.batch_size, **timing})
            print(f"  {timing['seconds_per_epoch']} s per epoch", flush=True)
    return rows


def run_vog_cost(kinds, n: int, steps: int) -> list[dict]:
    """Median per-step time without VoG, with the in-pass input gradient, and with a separate
    evaluation pass (forward + input gradient, counted on top of a plain step)."""
    import torch

    from analytics import finetune
    from analytics.dynamics import _one_thread_if_small
    from analytics.finetune import FinetuneConfig

    out = []
    for kind in kinds:
        dataset, _ = _sized(_dataset(SAMPLE_OF[kind]), n)
        config = FinetuneConfig()
        task = finetune._build_task(dataset, config)
        net = task.network(0)
        optimiser = torch.optim.AdamW(net.parameters(), lr=1e-5)
        gold = torch.from_numpy(dataset.label_codes)
        rng = np.random.default_rng(0)
        batches = [rng.choice(dataset.n_examples, config.batch_size, replace=False) for _ in range(steps + 1)]

        def train_step(rows, vog: bool):
            net.train()
            finetune._train_step(task, net, optimiser, rows, gold[torch.from_numpy(rows)], vog=vog)

        def separate_pass(rows):
            net.eval()
            output, _, x = task.forward(net, task.batch(rows), vog=True)
            targets = gold[torch.from_numpy(rows)]
            torch.autograd.grad(output.gather(1, targets[:, None]).sum(), x)

        variants = {"plain": lambda rows: train_step(rows, False), "in_pass": lambda rows: train_step(rows, True),
                    "extra_pass": separate_pass}
        timings = {name: [] for name in variants}
        with _one_thread_if_small(task.step_floats(config.batch_size), task.device):
            for step, rows in enumerate(batches):
                # interleaved, in a rotating order, so that a change in the machine's load
                # touches every variant alike; the first round is a warm-up
                names = list(variants)[step % 3:] + list(variants)[:step % 3]
                for name in names:
                    began = time.perf_counter()
                    variants[name](rows)
                    if step:
                        timings[name].append(time.perf_counter() - began)
        plain, in_pass, extra = (float(np.median(timings[name])) for name in variants)
        out.append({"kind": kind, "steps": steps, "seconds_per_step_no_vog": round(plain, 4),
                    "seconds_per_step_vog_in_training_pass": round(in_pass, 4),
                    "seconds_per_step_vog_separate_pass": round(plain + extra, 4),
                    "relative_in_training_pass": round(in_pass / plain, 2),
                    "relative_separate_pass": round((plain + extra) / plain, 2)})
        print(f"vog_cost: {out[-1]}", flush=True)
    return out


def run_samples(kinds, save_to: Path | None, cache: Path) -> list[dict]:
    from scipy.stats import spearmanr

    from analytics.finetune import FinetuneConfig, finetune_dynamics
    from analytics.scores.regions import REGIONS, assign_regions
    from analytics.scores.registry import ScoreInputs, compute_scores

    out = []
    for kind in kinds:
        key = SAMPLE_OF[kind]
        dataset = _dataset(key)
        config = FinetuneConfig()
        print(f"samples: {key} ...", flush=True)
        began = time.perf_counter()
        dynamics = finetune_dynamics(dataset, config, cache_dir=cache / key)
        seconds = time.perf_counter() - began
        extra = {"vog_raw": dynamics.vog} if "vog_raw" in {f.name for f in fields(ScoreInputs)} else {}
        scores = compute_scores(ScoreInputs(labels=dynamics.gold, logits_by_epoch=dynamics.logits,
                                            early_epoch=dynamics.early_epoch, hidden_norms=dynamics.hidden_norms,
                                            **extra))
        confidence, variability = scores["confidence"].to_numpy(), scores["variability"].to_numpy()
        regions = assign_regions(confidence, variability)
        rho = float(spearmanr(confidence, variability)[0])
        accuracy = (dynamics.logits[0].argmax(-1) == dynamics.gold).mean(axis=1)
        row = {"sample": key, "kind": kind, "n": dataset.n_examples, "config": config.params(),
               "learning_rate_used": _rate(kind, config), "seconds_total": round(seconds, 1),
               "spearman_confidence_variability": round(rho, 3), "two_dimensional": abs(rho) < 0.95,
               "regions": {name: int((regions == name).sum()) for name in REGIONS},
               "vog_finite": bool(np.isfinite(dynamics.vog).all()),
               "training_pass_accuracy_by_epoch": [round(float(a), 3) for a in accuracy]}
        out.append(row)
        print(f"  {row}", flush=True)
        if save_to is not None:
            folder = save_to / key
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "logits.npy", dynamics.logits)
            np.save(folder / "gold.npy", dynamics.gold)
            np.save(folder / "vog.npy", dynamics.vog)
            np.save(folder / "hidden_norms.npy", dynamics.hidden_norms)
            (folder / "meta.json").write_text(json.dumps({**row, "ids_file": "ids.json",
                                                          "early_epoch": dynamics.early_epoch,
                                                          "classes": list(dataset.classes)}, indent=2))
            (folder / "ids.json").write_text(json.dumps(dataset.table["id"].astype(str).tolist()))
    return out


def _rate(kind: str, config) -> float:
    from analytics.finetune import DEFAULT_LEARNING_RATES

    return config.learning_rate if config.learning_rate is not None else DEFAULT_LEARNING_RATES[kind]


def _same(row: dict, other: dict) -> bool:
    return row["kind"] == other["kind"] and row.get("n") == other.get("n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--kinds", nargs="+", choices=list(SAMPLE_OF), default=list(SAMPLE_OF))
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000])
    parser.add_argument("--max-steps", type=int, default=None,
                        help="text only: time this many steps of an epoch and scale to the whole epoch")
    parser.add_argument("--vog-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save-dynamics", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "finetune-bench-cache")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.out / "finetune_speed.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "cuda": torch.cuda.is_available(), "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    runs = {"speed": lambda: run_speed(args.sizes, args.kinds, args.max_steps),
            "vog_cost": lambda: run_vog_cost(args.kinds, 1000, args.vog_steps),
            "samples": lambda: run_samples(args.kinds, args.save_dynamics, args.cache)}
    for part in PARTS:
        if part in args.parts:
            # rows replace earlier rows of the same kind (and size); the others stay
            fresh = [{**row, "machine": machine} for row in runs[part]()]
            kept = [row for row in results.get(part, {}).get("rows", [])
                    if not any(_same(row, new) for new in fresh)]
            results[part] = {"rows": sorted(kept + fresh, key=lambda row: (row["kind"], row.get("n", 0)))}
    results["written"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")

    print("\n| kind | n | s per epoch | steps timed |")
    print("|---|---|---|---|")
    for row in results.get("speed", {}).get("rows", []):
        print(f"| {row['kind']} | {row['n']:,} | {row['seconds_per_epoch']} | {row['timed_steps']}/{row['steps']} |")
    print("\n| sample | Spearman(conf, var) | easy / ambiguous / hard | 2-D | VoG finite |")
    print("|---|---|---|---|---|")
    for row in results.get("samples", {}).get("rows", []):
        r = row["regions"]
        print(f"| {row['sample']} | {row['spearman_confidence_variability']} | {r['easy-to-learn']} / "
              f"{r['ambiguous']} / {r['hard-to-learn']} | {row['two_dimensional']} | {row['vog_finite']} |")
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
