"""Fine-tuning as a dynamics source: each kind of data, recording in the training pass, VoG,
resuming a stopped run, the checks before any work, and the held-out fallback."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import analytics.finetune as finetune
from analytics.access import Policy
from analytics.datasets import load_dataset
from analytics.finetune import FinetuneConfig, FinetuneError, check_finetune, finetune_dynamics, finetune_heldout
from analytics.samples import sample_by_key

TEXT = FinetuneConfig(epochs=3, max_tokens=12, batch_size=16, learning_rate=1e-4)
TABLE = FinetuneConfig(epochs=4, batch_size=16)
IMAGE = FinetuneConfig(epochs=3, batch_size=16)


def _slice(key: str, per_class: int):
    sample = sample_by_key(key)
    dataset = load_dataset(sample.path, roles=sample.roles)
    table = dataset.table.groupby("label", group_keys=False).head(per_class).reset_index(drop=True)
    return replace(dataset, table=table)


@pytest.fixture(scope="module")
def text_data():
    return _slice("debian-packages", 6)  # 48 texts, 8 classes


@pytest.fixture(scope="module")
def table_data():
    return _slice("breast-cancer", 60)  # 120 rows, 2 classes


@pytest.fixture(scope="module")
def image_data():
    return _slice("digits", 12)  # 120 images, 10 classes


@pytest.fixture(scope="module")
def text_run(text_data, tmp_path_factory):
    return finetune_dynamics(text_data, TEXT, cache_dir=tmp_path_factory.mktemp("text"))


def test_public_api():
    assert finetune.__all__ == ["FinetuneError", "FinetuneConfig", "check_finetune", "finetune_dynamics",
                                "finetune_heldout"]


def _check_recorded(dynamics, dataset, config):
    n, k = dataset.n_examples, len(dataset.classes)
    assert dynamics.source == "finetune"
    assert dynamics.logits.shape == (1, config.epochs, n, k) and dynamics.logits.dtype == np.float32
    np.testing.assert_array_equal(dynamics.gold, dataset.label_codes)
    assert dynamics.early_epoch == config.early_epoch == 0
    assert dynamics.hidden_norms.shape == (1, n) and (dynamics.hidden_norms > 0).all()
    assert dynamics.vog.shape == (n,) and np.isfinite(dynamics.vog).all() and (dynamics.vog > 0).all()
    assert np.isfinite(dynamics.logits).all()
    # recorded in each epoch's training pass: every example's logits move between epochs
    assert (np.abs(np.diff(dynamics.logits[0], axis=0)).max(axis=2) > 0).all()
    accuracy = (dynamics.logits[0].argmax(-1) == dynamics.gold).mean(axis=1)
    gold_probability = torch.softmax(torch.from_numpy(dynamics.logits[0]), -1).numpy()[:, np.arange(n), dynamics.gold]
    return accuracy, gold_probability.mean(axis=1)


def test_text_fine_tunes_minilm_and_records_each_epoch(text_run, text_data):
    accuracy, confidence = _check_recorded(text_run, text_data, TEXT)
    assert accuracy[-1] > accuracy[0] + 0.2 and confidence[-1] > confidence[0]


def test_table_trains_an_mlp(table_data, tmp_path):
    accuracy, confidence = _check_recorded(finetune_dynamics(table_data, TABLE, cache_dir=tmp_path), table_data, TABLE)
    assert accuracy[-1] >= 0.85 and accuracy[-1] > accuracy[0] and confidence[-1] > confidence[0]


def test_images_train_a_small_cnn(image_data, tmp_path):
    accuracy, confidence = _check_recorded(finetune_dynamics(image_data, IMAGE, cache_dir=tmp_path), image_data, IMAGE)
    assert accuracy[-1] > accuracy[0] + 0.2 and confidence[-1] > confidence[0]


def test_vog_is_the_variance_of_the_gold_logit_input_gradients(table_data, tmp_path, monkeypatch):
    """VoG from the paper's formula over the saved per-epoch gradients (kept by skipping the
    final clean-up), and the first minibatch's gradients recomputed by hand from the fresh MLP."""
    monkeypatch.setattr(finetune, "_clean_epochs", lambda folder: None)
    dynamics = finetune_dynamics(table_data, TABLE, cache_dir=tmp_path)
    folder = next(tmp_path.glob("finetune-dynamics-*"))
    grads = np.stack([np.load(folder / f"grads_{e}.npy") for e in range(TABLE.epochs)]).astype(np.float64)
    task = finetune._TableTask(table_data, TABLE, torch.device("cpu"))
    assert grads.shape == (TABLE.epochs, table_data.n_examples, task.vog_dims)
    np.testing.assert_allclose(dynamics.vog, grads.var(axis=0).mean(axis=1), rtol=1e-9, atol=0)
    # epoch 0, first minibatch: the network is the freshly initialised one
    first = torch.randperm(table_data.n_examples, generator=torch.Generator().manual_seed(TABLE.seed))[:TABLE.batch_size]
    net = task.network(TABLE.seed)
    x = task.batch(first.numpy()).clone().requires_grad_(True)
    logits = net.head(net.body(x))
    gold = torch.from_numpy(table_data.label_codes[first.numpy()])
    logits.gather(1, gold[:, None]).sum().backward()
    np.testing.assert_allclose(grads[0, first.numpy()], x.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dynamics.logits[0, 0, first.numpy()], logits.detach().numpy(), rtol=1e-5, atol=1e-6)


class _Stop(Exception):
    pass


def _stop_in_epoch(epoch: int):
    def progress(fraction, message):
        if message.startswith(f"Fine-tuning epoch {epoch}/"):
            raise _Stop
    return progress


@pytest.mark.parametrize("kind", ["text", "table", "image"])
def test_a_stopped_run_resumes_and_equals_an_uninterrupted_one(kind, request, tmp_path):
    dataset = request.getfixturevalue(f"{kind}_data")
    config = {"text": TEXT, "table": TABLE, "image": IMAGE}[kind]
    whole = (request.getfixturevalue("text_run") if kind == "text"
             else finetune_dynamics(dataset, config, cache_dir=tmp_path / "whole"))
    with pytest.raises(_Stop):  # stopped at the start of epoch 2: epoch 1 is cached
        finetune_dynamics(dataset, config, cache_dir=tmp_path / "stopped", progress=_stop_in_epoch(2))
    folder = next((tmp_path / "stopped").glob("finetune-dynamics-*"))
    assert sorted(p.name for p in folder.iterdir()) == ["grads_0.npy", "logits_0.npy", "state.pt"]
    torch.manual_seed(12345)  # whatever happened since, the run restores its own random state
    messages = []
    resumed = finetune_dynamics(dataset, config, cache_dir=tmp_path / "stopped",
                                progress=lambda fraction, message: messages.append(message))
    epochs = [m for m in messages if m.startswith("Fine-tuning epoch")]
    assert epochs[0].startswith("Fine-tuning epoch 2/") and not any(m.startswith("Fine-tuning epoch 1/") for m in epochs)
    np.testing.assert_array_equal(resumed.logits, whole.logits)
    np.testing.assert_array_equal(resumed.hidden_norms, whole.hidden_norms)
    np.testing.assert_array_equal(resumed.vog, whole.vog)
    assert [p.name for p in folder.iterdir()] == ["result.npz"]  # the epoch states are cleaned up
    again = finetune_dynamics(dataset, config, cache_dir=tmp_path / "stopped",
                              progress=_stop_in_epoch(1))  # finished: read back, nothing trains
    np.testing.assert_array_equal(again.logits, whole.logits)


def test_progress_names_epoch_step_and_expected_time(table_data, tmp_path):
    messages = []
    finetune_dynamics(table_data, TABLE, cache_dir=tmp_path, progress=lambda f, m: messages.append((f, m)))
    steps = -(-table_data.n_examples // TABLE.batch_size)
    assert len(messages) == TABLE.epochs * steps + 1
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(m.endswith(" s per epoch") for _, m in messages[:-1])
    assert messages[steps + 2][1].startswith(f"Fine-tuning epoch 2/{TABLE.epochs} · step 3/{steps} · ~")


# --------------------------------------------------------------------------- the user's models


def _tiny_bert_folder(folder, max_positions=64):
    import transformers

    from analytics.finetune import _minilm_folder

    tokenizer = transformers.AutoTokenizer.from_pretrained(_minilm_folder(), local_files_only=True)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=max_positions)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_text_fine_tunes_the_users_hugging_face_folder(text_data, tmp_path):
    folder = _tiny_bert_folder(tmp_path / "tiny-bert")
    config = replace(TEXT, model=str(folder), epochs=2, learning_rate=1e-3)
    dynamics = finetune_dynamics(text_data, config, cache_dir=tmp_path / "cache")
    assert dynamics.logits.shape == (1, 2, text_data.n_examples, 8)
    assert dynamics.vog is not None and np.isfinite(dynamics.vog).all()
    assert config.params()["model"] != FinetuneConfig().params()["model"]


def test_images_fine_tune_a_torchscript_checkpoint(image_data, tmp_path):
    nn = torch.nn
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    path = tmp_path / "backbone.pt"
    torch.jit.save(torch.jit.script(backbone), str(path))
    dynamics = finetune_dynamics(image_data, replace(IMAGE, model=str(path), epochs=2), cache_dir=tmp_path / "c")
    assert dynamics.logits.shape == (1, 2, image_data.n_examples, 10)
    assert np.isfinite(dynamics.vog).all() and (dynamics.vog > 0).all()
    assert torch.jit.load(str(path)).state_dict()["0.weight"].equal(backbone[0].weight)  # the file is untouched


# --------------------------------------------------------------------------- checks before any work


@pytest.mark.parametrize("change, named", [
    ({"epochs": 1}, "epochs=1"), ({"batch_size": 0}, "batch_size=0"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"learning_rate": float("nan")}, "learning_rate"), ({"max_tokens": 2}, "max_tokens=2"),
    ({"heldout": "sometimes"}, "heldout='sometimes'"), ({"device": "abacus"}, "device='abacus'"),
    ({"heldout_budget_s": -5}, "heldout_budget_s"), ({"max_tokens": 100_000}, "max_tokens=100000"),
])
def test_bad_options_are_refused(text_data, change, named):
    with pytest.raises(FinetuneError, match=named.replace("(", r"\(").replace("[", r"\[")):
        check_finetune(text_data, replace(FinetuneConfig(), **change))


def test_model_paths_are_checked(text_data, table_data, image_data, tmp_path, monkeypatch):
    with pytest.raises(FinetuneError, match="no-such-model: no such file or folder"):
        check_finetune(text_data, FinetuneConfig(model=str(tmp_path / "no-such-model")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinetuneError, match="empty: not a Hugging Face model folder .*config.json"):
        check_finetune(text_data, FinetuneConfig(model=str(tmp_path / "empty")))
    (tmp_path / "no-tokenizer").mkdir()
    (tmp_path / "no-tokenizer" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FinetuneError, match="no-tokenizer: has no tokenizer"):
        check_finetune(text_data, FinetuneConfig(model=str(tmp_path / "no-tokenizer")))
    with pytest.raises(FinetuneError, match="tables train an MLP from scratch"):
        check_finetune(table_data, FinetuneConfig(model=str(tmp_path / "no-tokenizer")))
    state_dict = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), state_dict)
    with pytest.raises(FinetuneError, match="weights.pt: fine-tuning an image model takes .* TorchScript"):
        check_finetune(image_data, FinetuneConfig(model=str(state_dict)))
    # outside the operator's data roots: by an explicit policy and from the environment
    inside = tmp_path / "roots"
    inside.mkdir()
    folder = _tiny_bert_folder(tmp_path / "outside-bert")
    with pytest.raises(FinetuneError, match="outside the data folders"):
        check_finetune(text_data, FinetuneConfig(model=str(folder)), policy=Policy(data_roots=(inside.resolve(),)))
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(inside))
    with pytest.raises(FinetuneError, match="outside the data folders"):
        check_finetune(text_data, FinetuneConfig(model=str(folder)))
    with pytest.raises(FinetuneError, match="outside the data folders"):
        finetune_dynamics(text_data, FinetuneConfig(model=str(folder)), cache_dir=tmp_path / "c")
    monkeypatch.setenv("CARTOGRAPHER_DATA_ROOTS", str(tmp_path))
    check_finetune(text_data, FinetuneConfig(model=str(folder), max_tokens=64))  # inside: accepted
    with pytest.raises(FinetuneError, match="max_tokens=96: the model reads at most 64 tokens"):
        check_finetune(text_data, FinetuneConfig(model=str(folder), max_tokens=96))


def test_params_are_a_json_cache_key_without_the_device():
    base = FinetuneConfig()
    assert json.loads(json.dumps(base.params())) == base.params()
    assert FinetuneConfig(device="cpu").params() == base.params()
    for change in ({"epochs": 6}, {"learning_rate": 1e-4}, {"batch_size": 16}, {"max_tokens": 64}, {"seed": 1},
                   {"heldout": "probe"}):
        assert replace(base, **change).params() != base.params(), change


# --------------------------------------------------------------------------- held-out probabilities


def test_heldout_cross_fits_when_it_fits_the_budget(table_data, tmp_path):
    config = replace(TABLE, heldout_budget_s=60.0)
    probabilities, how = finetune_heldout(table_data, config, cache_dir=tmp_path, epoch_seconds=0.5)
    assert how == "fine-tuning cross-fit, 5 folds"
    assert probabilities.shape == (table_data.n_examples, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities.argmax(axis=1) == table_data.label_codes).mean() > 0.8
    cached, _ = finetune_heldout(table_data, replace(config, heldout="cross-fit"), cache_dir=tmp_path)
    np.testing.assert_array_equal(cached, probabilities)  # the folds were cached


def test_heldout_falls_back_to_the_probe_with_a_reason(table_data, tmp_path):
    probabilities, how = finetune_heldout(table_data, replace(TABLE, heldout_budget_s=900.0), cache_dir=tmp_path,
                                          epoch_seconds=200.0)
    assert probabilities is None
    assert how == "probe: cross-fitting fine-tuning would take ~53 min > 15 min budget"
    probabilities, how = finetune_heldout(table_data, replace(TABLE, heldout="probe"), cache_dir=tmp_path)
    assert probabilities is None and how.startswith("probe:")
    assert not any(tmp_path.iterdir())  # nothing was trained
    # without a measured epoch time, a few steps are timed (a table's epoch takes well under 900 s)
    probabilities, how = finetune_heldout(table_data, replace(TABLE, heldout_budget_s=0.0), cache_dir=tmp_path)
    assert probabilities is None and how.startswith("probe: cross-fitting fine-tuning would take ~")


def test_images_fine_tune_a_hugging_face_image_folder(image_data, tmp_path):
    import transformers

    folder = tmp_path / "tiny-vit"
    config = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    transformers.ViTModel(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    dynamics = finetune_dynamics(image_data, replace(IMAGE, model=str(folder), epochs=2), cache_dir=tmp_path / "c")
    assert dynamics.logits.shape == (1, 2, image_data.n_examples, 10)
    # the 64×64 processed pixels' gradients are pooled to 32×32 per channel before VoG
    assert np.isfinite(dynamics.vog).all() and (dynamics.vog > 0).all()
