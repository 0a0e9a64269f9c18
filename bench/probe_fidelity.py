"""How far is the probe's data map from the fine-tuned one? (issue 13, item 4)

For each bundled sample the reference map comes from fine-tuning (``analytics.finetune``, its
default settings: the training-pass logits of every epoch, as allenai/cartography records them).
Each probe setting then trains on the frozen default embeddings, and its map is compared with the
reference: Spearman correlation of confidence and of variability, agreement of the regions, the
share of hard-to-learn examples, and the probe map's own Spearman(confidence, variability) (a map
with |ρ| > 0.95 is one-dimensional).

    .venv/bin/python bench/probe_fidelity.py                 # all samples, every setting
    .venv/bin/python bench/probe_fidelity.py --samples digits --settings default,lr3e-4

Writes ``bench/results/probe_fidelity.json`` and prints the Markdown table for docs/FIDELITY.md.
Fine-tuned epochs are cached under ``workspace/bench-finetune/`` (a stopped run resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.datasets import load_dataset  # noqa: E402
from analytics.dynamics import ProbeConfig, TrainingDynamics, train_probe  # noqa: E402
from analytics.embeddings import compute_embeddings, default_spec  # noqa: E402
from analytics.finetune import FinetuneConfig, finetune_dynamics  # noqa: E402
from analytics.samples import SAMPLES  # noqa: E402
from analytics.scores import REGIONS, RegionThresholds, assign_regions  # noqa: E402
from analytics.scores.training_dynamics import cartography  # noqa: E402
from analytics.workspace import Workspace  # noqa: E402

DEFAULT = ProbeConfig()
#: Probe settings tried: each changes one thing from the shipped default, or combines the
#: changes that moved the map towards fine-tuning.
SETTINGS: dict[str, ProbeConfig] = {
    "default": DEFAULT,
    "lr3e-4": replace(DEFAULT, learning_rate=3e-4),
    "lr1e-4": replace(DEFAULT, learning_rate=1e-4),
    "wd1e-2": replace(DEFAULT, weight_decay=1e-2),
    "wd1e-1": replace(DEFAULT, weight_decay=1e-1),
    "linear": replace(DEFAULT, hidden=0),
    "epochs5": replace(DEFAULT, epochs=5),
    "lr3e-4+wd1e-2": replace(DEFAULT, learning_rate=3e-4, weight_decay=1e-2),
    "linear+lr1e-3": replace(DEFAULT, hidden=0, learning_rate=1e-3),
}


def map_of(dynamics: TrainingDynamics) -> dict[str, np.ndarray]:
    carto = cartography(dynamics.logits, dynamics.gold)
    regions = assign_regions(carto["confidence"], carto["variability"], RegionThresholds())
    return {**carto, "region": regions}


def describe(m: dict[str, np.ndarray]) -> dict:
    counts = {region: int((m["region"] == region).sum()) for region in REGIONS}
    return {"rho_conf_var": round(float(spearmanr(m["confidence"], m["variability"])[0]), 3),
            "regions": counts, "hard_share": round(counts["hard-to-learn"] / len(m["region"]), 4)}


def compare(probe: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    return {"spearman_confidence": round(float(spearmanr(probe["confidence"], reference["confidence"])[0]), 3),
            "spearman_variability": round(float(spearmanr(probe["variability"], reference["variability"])[0]), 3),
            "region_agreement": round(float((probe["region"] == reference["region"]).mean()), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", default=",".join(s.key for s in SAMPLES))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "probe_fidelity.json"))
    parser.add_argument("--reference-dir", default=None, metavar="DIR",
                        help="take the fine-tuned dynamics from DIR/<sample>/{logits,gold}.npy (as written by "
                             "bench/finetune_speed.py --save-dynamics) instead of fine-tuning again")
    args = parser.parse_args()
    workspace = Workspace(ROOT / "workspace")
    results: dict = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "samples": {}}
    for sample in (s for s in SAMPLES if s.key in args.samples.split(",")):
        dataset = load_dataset(sample.path, roles=sample.roles)
        spec = default_spec(dataset)
        vectors = workspace.cached(dataset.fingerprint, "embeddings", {**spec.cache_params(), "n": dataset.n_examples},
                                   lambda: compute_embeddings(dataset, spec), fmt="npy")
        start = time.perf_counter()
        saved = Path(args.reference_dir) / sample.key if args.reference_dir else None
        if saved is not None and (saved / "logits.npy").exists():
            tuned = TrainingDynamics(logits=np.load(saved / "logits.npy"), gold=np.load(saved / "gold.npy"),
                                     source="finetune")
            if not np.array_equal(tuned.gold, dataset.label_codes):
                raise SystemExit(f"{saved}: its gold labels are not this dataset's")
        else:
            tuned = finetune_dynamics(dataset, FinetuneConfig(),
                                      cache_dir=ROOT / "workspace" / "bench-finetune" / sample.key,
                                      progress=lambda f, m: print(f"  {sample.key}: {m}", end="\r", flush=True))
        reference = map_of(tuned)
        entry = {"n": dataset.n_examples, "embedding": spec.source, "finetune": asdict(FinetuneConfig()),
                 "finetune_s": round(time.perf_counter() - start, 1), "reference": describe(reference),
                 "settings": {}}
        print(f"\n{sample.key}: fine-tuned map {entry['reference']}")
        for name in args.settings.split(","):
            config = SETTINGS[name]
            start = time.perf_counter()
            probe = map_of(train_probe(vectors, dataset.label_codes, len(dataset.classes), config))
            entry["settings"][name] = {"config": asdict(config), "seconds": round(time.perf_counter() - start, 1),
                                       **describe(probe), **compare(probe, reference)}
            print(f"  {name}: {entry['settings'][name]}")
        results["samples"][sample.key] = entry
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


def markdown(results: dict) -> str:
    lines = ["| sample | probe setting | ρ(conf, var) | hard-to-learn | ρ confidence vs fine-tune | "
             "ρ variability vs fine-tune | region agreement |", "|---|---|---:|---:|---:|---:|---:|"]
    for key, entry in results["samples"].items():
        ref = entry["reference"]
        lines.append(f"| {key} | **fine-tune** (reference) | {ref['rho_conf_var']:.2f} | "
                     f"{ref['hard_share']:.1%} | 1 | 1 | 100% |")
        for name, row in entry["settings"].items():
            lines.append(f"| {key} | {name} | {row['rho_conf_var']:.2f} | {row['hard_share']:.1%} | "
                         f"{row['spearman_confidence']:.2f} | {row['spearman_variability']:.2f} | "
                         f"{row['region_agreement']:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
