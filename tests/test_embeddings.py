"""Embedding sources: MiniLM text, pixels, tabular, vector column, vectors file, checkpoints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analytics.datasets import NO_COLUMN, ColumnRoles, load_dataset
from analytics.embeddings import EmbeddingError, EmbeddingSpec, compute_embeddings, default_spec
from analytics.samples import sample_by_key


@pytest.fixture
def text_dataset(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "text": ["The cat sat on the mat.", "A kitten slept on the rug.",
                 "Stock markets fell sharply today.", "Shares dropped as investors sold."],
        "label": ["pets", "pets", "finance", "finance"],
    }).to_csv(path, index=False)
    return load_dataset(path)


def test_default_source_follows_the_data_kind(text_dataset):
    assert default_spec(text_dataset).source == "minilm"
    digits = sample_by_key("digits")
    assert default_spec(load_dataset(digits.path)).source == "pixels"
    cancer = sample_by_key("breast-cancer")
    spec = default_spec(load_dataset(cancer.path, roles=cancer.roles))
    assert spec.source == "tabular" and spec.metric == "euclidean"


def test_minilm_is_offline_and_semantic(text_dataset, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vectors = compute_embeddings(text_dataset)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    # the two pet sentences are closer to each other than to the finance ones
    assert similarity[0, 1] > max(similarity[0, 2], similarity[0, 3])
    assert similarity[2, 3] > max(similarity[2, 0], similarity[2, 1])


def test_pixels_separate_distinct_images(tmp_path):
    root = tmp_path / "imgs"
    for label, colour in (("dark", 20), ("light", 230)):
        for i in range(4):
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12, 12), (colour + i, colour, colour)).save(root / label / f"{i}.png")
    dataset = load_dataset(root)
    progress = []
    vectors = compute_embeddings(dataset, progress=lambda f, m: progress.append(m))
    assert vectors.shape[0] == 8 and vectors.shape[1] <= 128
    dark, light = vectors[:4], vectors[4:]
    within = np.linalg.norm(dark - dark.mean(0), axis=1).mean()
    between = np.linalg.norm(dark.mean(0) - light.mean(0))
    assert between > 3 * within
    assert progress and progress[-1].startswith("Embeddings ready")


def test_tabular_standardises_imputes_and_one_hot_encodes(tmp_path):
    path = tmp_path / "tab.csv"
    pd.DataFrame({"height": [1.0, 2.0, None, 4.0], "colour": ["red", "blue", "red", "green"],
                  "free_text": ["a b c d", "e f g", "h i", "j"], "label": ["x", "y", "x", "y"]}
                 ).to_csv(path, index=False)
    dataset = load_dataset(path, roles=ColumnRoles(text=NO_COLUMN))
    vectors = compute_embeddings(dataset, EmbeddingSpec(source="tabular"))
    # height (standardised) + its missing flag + 3 colour levels + 4 free_text levels
    assert vectors.shape == (4, 1 + 1 + 3 + 4)
    assert abs(vectors[:, 0].mean()) < 1e-6
    assert vectors[2, 1] == 1.0  # the missing height is flagged


def test_vector_column_in_a_parquet_dataset(tmp_path):
    path = tmp_path / "v.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "label": ["x", "y", "x"],
                  "embedding": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]}).to_parquet(path)
    dataset = load_dataset(path)
    spec = default_spec(dataset)
    assert spec.source == "column" and spec.column == "embedding"
    np.testing.assert_array_equal(compute_embeddings(dataset, spec)[1], [1.0, 0.0])


def test_vector_column_with_ragged_rows_names_the_row(tmp_path):
    path = tmp_path / "v.parquet"
    pd.DataFrame({"id": ["a", "b", "c"], "label": ["x", "y", "x"],
                  "embedding": [[0.0, 1.0], [1.0, 0.0], [0.5]]}).to_parquet(path)
    with pytest.raises(EmbeddingError, match="row 1 has 2 values and row 3 has 1"):
        compute_embeddings(load_dataset(path))


def test_npy_file_in_row_order_and_wrong_shape(tmp_path, text_dataset):
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "e.npy", vectors)
    out = compute_embeddings(text_dataset, EmbeddingSpec(source="file", path=str(tmp_path / "e.npy")))
    np.testing.assert_array_equal(out, vectors)
    np.save(tmp_path / "bad.npy", vectors[:3])
    with pytest.raises(EmbeddingError, match=r"expected an array of shape \(4, d\).*found shape \(3, 3\)"):
        compute_embeddings(text_dataset, EmbeddingSpec(source="file", path=str(tmp_path / "bad.npy")))


def test_parquet_file_aligned_by_id(tmp_path, text_dataset):
    frame = pd.DataFrame({"id": ["d", "c", "b", "a", "extra"], "e0": [4.0, 3, 2, 1, 9], "e1": [0.0, 0, 0, 0, 0]})
    frame.to_parquet(tmp_path / "e.parquet")
    out = compute_embeddings(text_dataset, EmbeddingSpec(source="file", path=str(tmp_path / "e.parquet")))
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, 4])
    frame[frame["id"] != "c"].to_parquet(tmp_path / "missing.parquet")
    with pytest.raises(EmbeddingError, match=r"1 dataset ids have no embedding, e.g. 'c'"):
        compute_embeddings(text_dataset, EmbeddingSpec(source="file", path=str(tmp_path / "missing.parquet")))


def test_nan_embeddings_are_refused_with_rows(tmp_path, text_dataset):
    vectors = np.ones((4, 2), np.float32)
    vectors[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", vectors)
    with pytest.raises(EmbeddingError, match=r"1 embeddings hold NaN or infinite values \(rows 3\)"):
        compute_embeddings(text_dataset, EmbeddingSpec(source="file", path=str(tmp_path / "nan.npy")))


def test_torchscript_checkpoint_on_a_table(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0], "label": ["x", "y", "x", "y"]}).to_csv(path, index=False)
    dataset = load_dataset(path)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    out = compute_embeddings(dataset, EmbeddingSpec(source="checkpoint", path=str(tmp_path / "m.pt")))
    from analytics.embeddings import tabular_features

    expected = model(torch.from_numpy(tabular_features(dataset))).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path, text_dataset):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(EmbeddingError, match="arbitrary code"):
        compute_embeddings(text_dataset, EmbeddingSpec(source="checkpoint", path=str(tmp_path / "evil.pt"),
                                                       architecture="torch.nn:Linear"))
    assert not marker.exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, text_dataset):
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(EmbeddingError, match=r"junk\.pt"):
        compute_embeddings(text_dataset, EmbeddingSpec(source="checkpoint", path=str(tmp_path / "junk.pt"),
                                                       architecture="torch.nn:Linear"))


def test_spec_validation():
    with pytest.raises(EmbeddingError, match="Unknown embedding source"):
        EmbeddingSpec(source="bert")
    with pytest.raises(EmbeddingError, match="needs a path"):
        EmbeddingSpec(source="file")
