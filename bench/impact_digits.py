"""Curation impact on the digits sample with 10% of its labels flipped: the figures for the note.

1. Flip 10% of the digits' labels to another class at random (seed 0, as ``fidelity.py`` does)
   and run the default analysis on the noisy copy (pixels embeddings, probe, scores, clusters).
2. Pruning curves: drop the hardest first by EL2N, forgetting events, AUM, confidence, label
   quality and KNN-Shapley, and at random; kept fractions 10%..100%; 3 seeds; 5-fold
   cross-validation (the digits have no test split); the run's probe (one hidden layer of 256,
   10 epochs), every subset trained for as many steps as the whole training fold. Accuracy is
   judged twice on the held-out folds: against the noisy labels (all a user has) and against the
   original clean labels (what the flips hide).
3. What-if: remove the examples the run flags as label issues (``label_issue``, confident
   learning) against a random removal of as many training rows, judged the same two ways.

    .venv/bin/python bench/impact_digits.py            # about 10 minutes on 2 busy cores

Writes ``bench/results/impact_digits.json`` and ``.md`` (the tables), and the reports (CSV, JSON,
HTML figures) under ``bench/results/impact_digits/``. The analysis and every experiment are
cached in ``bench/results/impact_workspace`` (``--workspace``), so a second run only prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from analytics.datasets import load_dataset  # noqa: E402
from analytics.impact import (  # noqa: E402
    IMPACT_PROBE,
    Evaluation,
    PruningConfig,
    WhatIfConfig,
    changes_from_ids,
    impact_data,
    pruning_curves,
    what_if,
)
from analytics.impact_report import write_report  # noqa: E402
from analytics.pipeline import AnalysisConfig, is_run_dir, load_run, run_analysis  # noqa: E402
from analytics.samples import sample_by_key  # noqa: E402
from analytics.workspace import Workspace  # noqa: E402
from fidelity import flip_labels  # noqa: E402

SCORES = ("el2n", "forgetting_events", "aum", "confidence", "label_quality", "knn_shapley")


def pruning_table(table: pd.DataFrame) -> str:
    """Markdown: kept fraction (rows) × score (columns) → mean accuracy."""
    pivot = table.pivot(index="kept_fraction", columns="score", values="accuracy")
    pivot = pivot[list(table["score"].drop_duplicates())]
    header = "| kept | " + " | ".join(pivot.columns) + " |"
    lines = [header, "|" + "---|" * (len(pivot.columns) + 1)]
    for fraction, row in pivot.iterrows():
        best = row.drop("random").max() if "random" in row else row.max()
        cells = [f"**{v:.1%}**" if v == best and fraction < 1 else f"{v:.1%}" for v in row]
        lines.append(f"| {fraction:.0%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def what_if_table(results: dict[str, pd.DataFrame]) -> str:
    lines = ["| judged against | variant | training rows | accuracy (95% CI) | vs original (95% CI) |",
             "|---|---|---|---|---|"]
    for judged, table in results.items():
        for row in table[table["scope"] == "overall"].itertuples():
            change = "—" if row.variant == "original" else \
                f"{row.delta:+.2%} ({row.delta_low:+.2%} to {row.delta_high:+.2%})"
            lines.append(f"| {judged} | {row.variant} | {row.n_train:,.0f} | {row.accuracy:.2%} "
                         f"({row.ci_low:.2%}–{row.ci_high:.2%}) | {change} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(ROOT / "bench" / "results" / "impact_workspace"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--probe", choices=("run", "linear"), default="run")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    workspace = Workspace(Path(args.workspace))
    out = Path(args.out)

    sample = sample_by_key("digits")
    noisy, flipped = flip_labels(load_dataset(sample.path, roles=sample.roles))
    clean_codes = load_dataset(sample.path, roles=sample.roles).label_codes
    run_dir = Path(args.workspace) / "run"
    if is_run_dir(run_dir) and load_run(run_dir).dataset.fingerprint == noisy.fingerprint:
        run = load_run(run_dir)  # analysed before: keep its manifest (and its timings)
    else:
        run = run_analysis(noisy, AnalysisConfig(), workspace=workspace, out_dir=run_dir)
    analysed = run.manifest["timings_s"]["total"]
    data = impact_data(run)
    probe = replace(data.probe if args.probe == "run" else IMPACT_PROBE, device=args.device)
    evaluation = Evaluation(folds=args.folds)
    print(f"digits: {flipped.sum()} of {data.n} labels flipped; analysis {analysed:.0f} s; "
          f"probe {probe}", file=sys.stderr, flush=True)

    def progress(label):
        state = {"time": 0.0}

        def report(fraction, message):
            if time.monotonic() - state["time"] > 10 or fraction >= 1:
                print(f"[{label} {fraction:4.0%}] {message}", file=sys.stderr, flush=True)
                state["time"] = time.monotonic()
        return report

    config = PruningConfig(scores=SCORES, fractions=tuple(round(0.1 * i, 1) for i in range(1, 11)),
                           seeds=args.seeds, evaluation=evaluation, probe=probe)
    timings = {}
    pruning = {}
    for judged, labels in (("noisy labels", None), ("clean labels", clean_codes)):
        pruning[judged] = pruning_curves(data, config, workspace=workspace, evaluation_labels=labels,
                                         progress=progress(f"pruning, {judged}"))
        timings[f"pruning ({judged})"] = pruning[judged].info["seconds"]  # when computed, not read back

    flagged = run.examples["label_issue"].to_numpy(dtype=bool)
    changes = changes_from_ids(run.examples["id"].astype(str).to_numpy()[flagged], source="label_issue flags")
    what_ifs = {}
    for judged, labels in (("noisy labels", None), ("clean labels", clean_codes)):
        result = what_if(data, changes, WhatIfConfig(seeds=args.seeds, evaluate_on="original",
                                                    evaluation=evaluation, probe=probe),
                         workspace=workspace, evaluation_labels=labels, progress=progress(f"what-if, {judged}"))
        what_ifs[judged] = result.table
        timings[f"what-if ({judged})"] = result.info["seconds"]

    reports = out / "impact_digits"
    for judged, result in pruning.items():
        write_report(result, reports / judged.split()[0])
    precision = float(flipped[flagged].mean()) if flagged.any() else float("nan")
    recall = float(flagged[flipped].mean())
    header = (f"Digits (1,797 images, pixels embeddings), {flipped.sum()} labels flipped (10%, seed 0). "
              f"{pruning['noisy labels'].info['evaluation']}; probe: {pruning['noisy labels'].info['probe']}; "
              f"{args.seeds} seeds; mean accuracy on the held-out folds.")
    markdown = "\n\n".join([
        header,
        "**Pruning curves, drop the hardest first — judged against the noisy labels**",
        pruning_table(pruning["noisy labels"].table),
        "**The same probes judged against the clean labels**",
        pruning_table(pruning["clean labels"].table),
        f"**What-if: remove the {flagged.sum()} examples flagged `label_issue` "
        f"(precision {precision:.0%}, recall {recall:.0%} of the flips) vs a random removal of as many**",
        what_if_table(what_ifs),
    ])
    print(markdown)
    (out / "impact_digits.md").write_text(markdown + "\n")
    (out / "impact_digits.json").write_text(json.dumps({
        "flipped": int(flipped.sum()), "n": data.n, "flagged": int(flagged.sum()),
        "flag_precision": precision, "flag_recall": recall, "analysis_s": round(analysed, 1), "timings_s": timings,
        "config": pruning["noisy labels"].info["config"], "device": pruning["noisy labels"].info["device"],
        "pruning": {k: json.loads(v.table.to_json(orient="records")) for k, v in pruning.items()},
        "what_if": {k: json.loads(v.to_json(orient="records")) for k, v in what_ifs.items()},
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
