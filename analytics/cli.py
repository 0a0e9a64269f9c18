"""The ``cartographer`` command line.

    cartographer validate DATASET [--label COL] [--id COL] [--text COL] [--image COL] [--split COL]
    cartographer samples
"""

from __future__ import annotations

import argparse
import sys

from analytics.datasets import ColumnRoles, DatasetError, MissingLabelsError, load_dataset
from analytics.overview import summarize
from analytics.samples import SAMPLES

__all__ = ["main"]


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a CSV/TSV/Parquet/JSONL file or an image folder")
    for role in ("id", "label", "text", "image", "split"):
        parser.add_argument(f"--{role}", metavar="COLUMN", default=None,
                            help=f"the {role} column (detected when omitted; '' for none)")
    parser.add_argument("--drop-missing-labels", action="store_true",
                        help="drop rows without a label instead of stopping")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSON files")


def _load(args: argparse.Namespace):
    roles = ColumnRoles(id=args.id, label=args.label, text=args.text, image=args.image, split=args.split)
    return load_dataset(args.dataset, roles=roles, drop_missing_labels=args.drop_missing_labels,
                        encoding=args.encoding)


def _validate(args: argparse.Namespace) -> int:
    dataset = _load(args)
    summary = summarize(dataset)
    print(f"{dataset.source}: {dataset.kind} dataset, {summary.n_examples} examples, "
          f"{summary.n_classes} classes, fingerprint {dataset.fingerprint}")
    roles = ", ".join(f"{role}={col!r}" for role, col in dataset.roles.as_dict().items() if col)
    print(f"columns used: {roles}")
    for row in summary.class_counts.itertuples():
        print(f"  {row.label:<24} {row.count:>8}  {row.share:6.1%}")
    for note in dataset.notes:
        print(f"note: {note}")
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.path}: {skipped.reason}")
    return 0


def _samples(_: argparse.Namespace) -> int:
    for sample in SAMPLES:
        print(f"{sample.key:<16} {sample.path}\n  {sample.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cartographer", description="Data Cartographer, headless.")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="load a dataset, check it and summarise it")
    _add_dataset_arguments(validate)
    validate.set_defaults(run=_validate)
    samples = commands.add_parser("samples", help="list the bundled sample datasets")
    samples.set_defaults(run=_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MissingLabelsError as exc:
        print(f"error: {exc}\n(use --drop-missing-labels to drop them)", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
