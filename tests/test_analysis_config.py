"""The source registries and the rules about which settings go together (analytics.analysis_config):
every entry complete and tested, the CLI and the app derived from them, conflicts refused alike."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analytics import analysis_config, embeddings, pipeline
from analytics.analysis_config import (
    DYNAMICS_REGISTRY,
    DYNAMICS_SOURCES,
    PLAIN_WORDING,
    AnalysisConfig,
    ConfigError,
    check_config,
)
from analytics.cli import build_parser, main
from analytics.datasets import load_dataset
from analytics.embeddings import EMBEDDING_REGISTRY, SOURCES, SPEC_OPTIONS, EmbeddingSpec, compute_embeddings
from analytics.finetune_config import FinetuneConfig

DATA_KINDS = ("text", "image", "tabular")


def test_the_public_api():
    assert set(analysis_config.__all__) == {"AnalysisConfig", "ConfigError", "DynamicsSource", "DYNAMICS_REGISTRY",
                                            "DYNAMICS_SOURCES", "Wording", "PLAIN_WORDING", "check_config"}
    assert pipeline.AnalysisConfig is AnalysisConfig  # the old import keeps working
    assert pipeline.DYNAMICS_SOURCES == DYNAMICS_SOURCES


@pytest.mark.parametrize("name", SOURCES)
def test_every_embedding_source_is_complete(name):
    source = EMBEDDING_REGISTRY[name]
    assert source.name == name and name != "auto"  # "auto" is the app's automatic choice
    assert source.label and source.label[0].isupper()
    assert source.metric in ("cosine", "euclidean")
    assert list(inspect.signature(source.embed).parameters) == ["dataset", "spec", "device", "progress", "executor"]
    assert set(source.default_for) <= set(DATA_KINDS)
    assert set(source.columns) <= {"text", "image"}
    assert set(source.options) <= set(SPEC_OPTIONS) - {"path"}
    if source.path is not None:
        assert source.path.what and source.path.example and callable(source.path.fingerprint)
        with pytest.raises(embeddings.EmbeddingError, match="needs a path"):
            EmbeddingSpec(source=name)
    assert EmbeddingSpec(source=name, path="x" if source.path else None).metric == source.metric


def test_every_data_kind_has_exactly_one_default_source():
    for kind in DATA_KINDS:
        assert len([s for s in EMBEDDING_REGISTRY.values() if kind in s.default_for]) == 1, kind


def test_an_entry_with_a_wrong_metric_or_option_is_refused():
    with pytest.raises(ValueError, match="metric 'manhattan'"):
        embeddings.EmbeddingSource(name="x", label="X", metric="manhattan", embed=lambda *a, **k: None)
    with pytest.raises(ValueError, match=r"unknown options \['colour'\]"):
        embeddings.EmbeddingSource(name="x", label="X", metric="cosine", embed=lambda *a, **k: None,
                                   options=("colour",))


# One small dataset per source: a source added to the registry without one here fails below.
def _table(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0], "label": list("xyxy")}).to_csv(path,
                                                                                                       index=False)
    return load_dataset(path)


def _minilm(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["a cat", "a dog", "stocks fell", "shares rose"], "label": list("ppff")}
                 ).to_csv(path, index=False)
    return load_dataset(path), EmbeddingSpec(source="minilm")


def _pixels(tmp_path):
    for i in range(4):
        (tmp_path / "img" / "xy"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), (60 * i, 10, 200 - 40 * i)).save(tmp_path / "img" / "xy"[i % 2] / f"{i}.png")
    return load_dataset(tmp_path / "img"), EmbeddingSpec(source="pixels")


def _column(tmp_path):
    path = tmp_path / "v.parquet"
    pd.DataFrame({"id": list("abcd"), "label": list("xyxy"), "vec": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.2]]}
                 ).to_parquet(path)
    return load_dataset(path), EmbeddingSpec(source="column", column="vec")


def _file(tmp_path):
    np.save(tmp_path / "e.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    return _table(tmp_path), EmbeddingSpec(source="file", path=str(tmp_path / "e.npy"))


def _checkpoint(tmp_path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), str(tmp_path / "m.pt"))
    return _table(tmp_path), EmbeddingSpec(source="checkpoint", path=str(tmp_path / "m.pt"))


EXAMPLES = {"minilm": _minilm, "pixels": _pixels, "tabular": lambda tmp: (_table(tmp), EmbeddingSpec(source="tabular")),
            "column": _column, "file": _file, "checkpoint": _checkpoint}


def test_every_source_has_an_example():
    assert set(EXAMPLES) == set(SOURCES)


@pytest.mark.parametrize("name", SOURCES)
def test_every_source_embeds_every_row_as_finite_float32(name, tmp_path):
    dataset, spec = EXAMPLES[name](tmp_path)
    vectors = compute_embeddings(dataset, spec)
    assert vectors.dtype == np.float32 and vectors.shape[0] == dataset.n_examples and vectors.shape[1] >= 1
    assert np.isfinite(vectors).all()
    params = spec.cache_params()
    assert params["source"] == name and ("path_fingerprint" in params) == (EMBEDDING_REGISTRY[name].path is not None)


def test_a_source_refuses_a_dataset_without_its_column(tmp_path):
    with pytest.raises(embeddings.EmbeddingError, match="the 'minilm' embedding source needs a text column"):
        compute_embeddings(_table(tmp_path), EmbeddingSpec(source="minilm"))


# --- derived lists ---------------------------------------------------------------------------------

def _choices(flag: str) -> tuple:
    analyze = build_parser()._subparsers._group_actions[0].choices["analyze"]
    return tuple(next(a for a in analyze._actions if flag in a.option_strings).choices)


def test_cli_choices_and_app_labels_equal_the_registries():
    from ui import analysis

    assert _choices("--embedding-source") == SOURCES
    assert _choices("--dynamics-from") == DYNAMICS_SOURCES
    assert analysis._SOURCE_LABELS == {"auto": "Automatic", **{n: s.label for n, s in EMBEDDING_REGISTRY.items()}}
    assert analysis._DYNAMICS_LABELS == {name: source.label for name, source in DYNAMICS_REGISTRY.items()}


@pytest.mark.parametrize("name", DYNAMICS_SOURCES)
def test_every_dynamics_source_is_complete(name):
    source = DYNAMICS_REGISTRY[name]
    assert source.name == name and source.label and source.noun
    assert source.input in (None, "dynamics_dir", "checkpoints")
    assert (source.input is None) == (source.minimum == 0) == (not source.needs)
    assert source.settings in (None, "finetune")
    if source.input:  # its "needs" sentence is what a config without its input raises
        with pytest.raises(ConfigError) as raised:
            AnalysisConfig(dynamics_from=name)
        assert str(raised.value) == source.needs.format(n=0)


# --- the rules -------------------------------------------------------------------------------------

RULES = {
    "a column for MiniLM": (dict(embedding=EmbeddingSpec(source="minilm", column="vec")),
                            "The 'minilm' embedding source takes no vector column; the sources that take one: "
                            "column."),
    "a path for the pixels": (dict(embedding=EmbeddingSpec(source="pixels", path="/x.npy")),
                              "The 'pixels' embedding source takes no path; the sources that take one: file, "
                              "checkpoint."),
    "an architecture for a vectors file": (dict(embedding=EmbeddingSpec(source="file", path="/x", architecture="m:C")),
                                           "takes no architecture; the sources that take one: checkpoint."),
    "fine-tuning settings with the probe": (dict(finetune=FinetuneConfig(epochs=3, seed=2)),
                                            "The fine-tuning settings epochs, seed apply only to training dynamics "
                                            "from the fine-tuning; these come from the probe."),
    "fine-tuning settings with a folder": (dict(dynamics_dir="/d", finetune=FinetuneConfig(model="/m")),
                                           "settings model apply only to"),
    "an architecture without a checkpoint": (dict(architecture="m:C"), "applies only to a checkpoint"),
    "no scores with a folder it implies": (dict(dynamics_dir="/d", scores=False), "Without scores"),
    "a folder and checkpoints": (dict(dynamics_dir="/d", checkpoints=("a", "b")), "Give either a dynamics folder "
                                                                                  "or per-epoch checkpoints"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_settings_that_do_not_go_together_raise_a_config_error(rule):
    fields, message = RULES[rule]
    with pytest.raises(ConfigError) as raised:
        check_config(**fields)
    assert message in str(raised.value)
    with pytest.raises(ConfigError) as built:
        AnalysisConfig(**fields)  # the configuration obeys the same rule, in the same words
    assert str(built.value) == str(raised.value)


def test_settings_that_go_together_resolve_their_dynamics_source():
    assert check_config() == "probe"
    assert check_config(checkpoints=("a", "b"), architecture="m:C") == "checkpoints"
    assert check_config(dynamics_dir="/d") == "folder"
    assert check_config(dynamics_from="finetune", finetune=FinetuneConfig(epochs=3)) == "finetune"
    assert check_config(embedding=EmbeddingSpec(source="checkpoint", path="/m", architecture="m:C"),
                        architecture="m:C") == "probe"
    assert check_config(embedding=EmbeddingSpec(source="column", column="vec"), scores=False) == "probe"


def test_the_wording_names_the_settings_the_caller_shows():
    from dataclasses import replace

    flags = replace(PLAIN_WORDING, names={"column": "--vector-column"},
                    embedding_option="{option} does not go with {source}")
    with pytest.raises(ConfigError, match="^--vector-column does not go with minilm$"):
        check_config(embedding=EmbeddingSpec(source="minilm", column="vec"), wording=flags)


@pytest.fixture
def small_table(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3, "label": ["x", "y"] * 10}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("flags, message", [
    (["--embedding-source", "minilm", "--vector-column", "vec"],
     "--vector-column does not go with --embedding-source minilm: the 'minilm' source takes no vector column "
     "(sources that do: column)."),
    (["--embedding-source", "tabular", "--embeddings", "{tmp}/e.npy"],
     "--embeddings does not go with --embedding-source tabular"),
    (["--embedding-source", "pixels", "--checkpoint", "{tmp}/m.pt"],
     "--checkpoint does not go with --embedding-source pixels"),
    (["--embedding-source", "checkpoint", "--embeddings", "{tmp}/e.npy"],
     "--embedding-source checkpoint takes its path from --checkpoint, not --embeddings."),
    (["--architecture", "m:C"], "--architecture applies only to --checkpoint"),
    (["--finetune-model", "/m", "--dynamics", "{tmp}"],
     "--finetune-model apply only to --dynamics-from finetune (the training dynamics here come from the folder)."),
])
def test_the_cli_refuses_them_in_its_flags(small_table, tmp_path, capsys, flags, message):
    code = main(["analyze", str(small_table), "--out", str(tmp_path / "run"),
                 *[flag.format(tmp=tmp_path) for flag in flags]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()
