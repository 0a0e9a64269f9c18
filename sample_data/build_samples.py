"""Rebuild the bundled sample datasets in this folder.

Run from the repository root::

    .venv/bin/python sample_data/build_samples.py

- ``debian_packages.csv`` (text) is drawn from the Debian 12 "bookworm" archive metadata on
  this machine: run ``apt-get update -o Acquire::Languages=en`` first so that apt holds the
  English long descriptions (``Translation-en``).
- ``digits/`` (images) and ``breast_cancer.csv`` (tabular) come from the copies that ship
  inside scikit-learn; nothing is downloaded.

The selection is deterministic (seeded) so a rebuild gives the same files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
APT_LISTS = Path("/var/lib/apt/lists")
SEED = 0

# Sections whose packages describe clearly different things, so the labels are natural
# but not trivial (games vs. graphics vs. sound overlap in places, as real data does).
TEXT_SECTIONS = ("games", "science", "sound", "graphics", "mail", "database", "editors", "web")
PER_SECTION = 200


def _apt_stanzas(pattern: str):
    """Yield dicts of fields from every apt list file matching ``pattern``."""
    for path in sorted(APT_LISTS.glob(pattern)):
        raw = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout
        for block in raw.split("\n\n"):
            fields: dict[str, str] = {}
            key = None
            for line in block.splitlines():
                if line.startswith(" ") and key:
                    fields[key] += "\n" + line[1:]
                elif ":" in line:
                    key, _, value = line.partition(":")
                    fields[key] = value.strip()
            if "Package" in fields:
                yield fields


def _clean_description(full: str) -> str:
    """Short description plus the first paragraph of the long one, on one line."""
    lines = full.split("\n")
    short = lines[0].strip()
    paragraph = []
    for line in lines[1:]:
        if line.strip() == ".":
            break
        paragraph.append(line.strip())
    long = re.sub(r"\s+", " ", " ".join(paragraph)).strip()
    if len(long) > 420:
        long = long[:420].rsplit(" ", 1)[0] + " …"
    return f"{short}. {long}" if long else short


def build_text() -> None:
    packages = {}
    for fields in _apt_stanzas("*_main_binary-amd64_Packages.lz4"):
        section = fields.get("Section", "").split("/")[-1]
        if section in TEXT_SECTIONS:
            source = fields.get("Source", fields["Package"]).split(" ")[0]
            packages[fields["Package"]] = (section, source, fields.get("Description-md5"))
    descriptions = {}
    for fields in _apt_stanzas("*_main_i18n_Translation-en.lz4"):
        descriptions[(fields["Package"], fields.get("Description-md5"))] = fields["Description-en"]

    rows = []
    for name, (section, source, md5) in sorted(packages.items()):
        text = descriptions.get((name, md5))
        # Debug symbols, docs and data files mostly repeat the main package's description.
        if text is None or re.search(r"-(dbg|dbgsym|doc|data|common)$", name):
            continue
        rows.append({"id": name, "text": _clean_description(text), "label": section, "source": source})
    frame = pd.DataFrame(rows)
    # One binary package per source package and one row per description: no near-copies.
    frame = frame.drop_duplicates("source").drop_duplicates("text")
    frame = (
        frame.sample(frac=1.0, random_state=SEED)
        .groupby("label").head(PER_SECTION)
        .sort_values("id")
    )
    frame["n_words"] = frame["text"].str.split().str.len()
    frame["split"] = _split_column(frame["label"])
    frame = frame[["id", "text", "label", "split", "source", "n_words"]]
    frame.to_csv(HERE / "debian_packages.csv", index=False)
    print(f"debian_packages.csv: {len(frame)} rows, {frame['label'].nunique()} sections")


def build_digits() -> None:
    digits = load_digits()
    root = HERE / "digits"
    for i, (image, target) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(target)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (255 - image * (255 / 16)).round().astype(np.uint8)  # dark ink on white
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{i:04d}.png", optimize=True)
    print(f"digits/: {len(digits.images)} images in {len(set(digits.target))} class folders")


def build_tabular() -> None:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    frame["diagnosis"] = np.asarray(data.target_names)[data.target]
    frame["split"] = _split_column(frame["diagnosis"])
    # No id column on purpose: the loader generates stable ids for files that have none.
    frame.to_csv(HERE / "breast_cancer.csv", index=False, float_format="%.6g")
    print(f"breast_cancer.csv: {len(frame)} rows")


def _split_column(labels: pd.Series) -> np.ndarray:
    """A stratified 80/20 train/test split, seeded."""
    index = np.arange(len(labels))
    _, test = train_test_split(index, test_size=0.2, stratify=labels, random_state=SEED)
    split = np.full(len(labels), "train", dtype=object)
    split[test] = "test"
    return split


if __name__ == "__main__":
    build_text()
    build_digits()
    build_tabular()
