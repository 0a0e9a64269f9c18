"""The bundled samples load as the kinds they claim, with their documented sizes."""

from __future__ import annotations

import pytest

from analytics.datasets import load_dataset
from analytics.overview import summarize
from analytics.samples import SAMPLE_DIR, SAMPLES, sample_by_key

EXPECTED = {
    "debian-packages": ("text", 1549, 8),
    "digits": ("image", 1797, 10),
    "breast-cancer": ("tabular", 569, 2),
}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.key)
def test_sample_loads(sample):
    dataset = load_dataset(sample.path, roles=sample.roles)
    kind, rows, classes = EXPECTED[sample.key]
    assert (dataset.kind, dataset.n_examples, len(dataset.classes)) == (kind, rows, classes)
    assert dataset.skipped == ()
    assert f"{rows:,}" in sample.description


def test_samples_are_documented_with_source_and_licence():
    readme = (SAMPLE_DIR / "README.md").read_text()
    for sample in SAMPLES:
        assert sample.path.name in readme
    assert readme.lower().count("licen") >= 3


def test_text_sample_has_real_text_and_a_split():
    dataset = load_dataset(sample_by_key("debian-packages").path)
    summary = summarize(dataset)
    assert dataset.table["text"].str.split().str.len().median() > 20
    assert set(summary.split_counts.index) == {"train", "test"}
    assert summary.imbalance_ratio < 2


def test_unknown_sample():
    with pytest.raises(KeyError, match="known: debian-packages"):
        sample_by_key("nope")
