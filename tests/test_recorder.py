"""The recorder for the user's own training: plain loop, Hugging Face Trainer, Lightning, the example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analytics.dynamics import DynamicsError, find_dynamics_folder, read_reference_dynamics
from analytics.recorder import DynamicsRecorder
from analytics.scores.training_dynamics import cartography

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, above all on a busy two-core machine."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def logged_scores(logged: np.ndarray, gold: np.ndarray) -> dict[str, np.ndarray]:
    """Confidence, variability and correctness straight from logits (epochs, n, K) in the
    recorder's class order, by the Dataset Cartography formulas."""
    logits = logged.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    true = probs[:, np.arange(len(gold)), gold]
    return {"confidence": true.mean(0), "variability": true.std(0),
            "correctness": (logits.argmax(-1) == gold).mean(0)}


def by_position(batches, ids: list[str], epochs: int, width: int) -> np.ndarray:
    """Logits captured batch by batch [(ids, logits)], as (epochs, n, K) in ``ids`` order
    (every epoch holds each example once)."""
    position = {guid: i for i, guid in enumerate(ids)}
    out = np.full((epochs, len(ids), width), np.nan, dtype=np.float32)
    seen = 0
    for batch_ids, logits in batches:
        for guid, row in zip(batch_ids, np.asarray(logits, dtype=np.float32)):
            out[seen // len(ids), position[str(guid)]] = row
            seen += 1
    assert seen == epochs * len(ids) and not np.isnan(out).any()
    return out


# --------------------------------------------------------------------------- plain PyTorch loop


@pytest.mark.parametrize("recorded_classes", [("a", "b", "c"), ("c", "a", "b"), None],
                         ids=["sorted", "unsorted", "no-classes"])
def test_a_plain_loop_gives_the_scores_of_the_logged_logits(tmp_path, recorded_classes, one_thread):
    """Done-when: the scores read back equal those of the logged logits to 1e-6, whatever the
    recorder's class order."""
    import torch

    dataset_classes = ("a", "b", "c")                 # the dataset's classes are the sorted names
    recorder_order = recorded_classes or dataset_classes
    rng = np.random.default_rng(1)
    n, epochs = 90, 4
    ids = [f"row-{i}" for i in range(n)]
    names = rng.choice(dataset_classes, n)
    gold = np.array([recorder_order.index(name) for name in names])
    x = torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32) + gold[:, None].astype(np.float32))
    y = torch.from_numpy(gold)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.3)
    recorder = DynamicsRecorder(tmp_path / "model", classes=recorded_classes)
    captured = []
    for _ in range(epochs):
        for batch in torch.randperm(n).split(16):
            logits = model(x[batch])                  # with grad, as in training
            recorder.log([ids[i] for i in batch], logits, y[batch])
            captured.append(([ids[i] for i in batch], logits.detach().numpy().copy()))
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        recorder.end_epoch()
    logged = by_position(captured, ids, epochs, 3)

    dynamics, notes = read_reference_dynamics(tmp_path / "model", ids, classes=dataset_classes,
                                              gold=np.array([dataset_classes.index(c) for c in names]))
    column = [dataset_classes.index(name) for name in recorder_order]
    np.testing.assert_array_equal(dynamics.logits[0][..., column], logged)   # exact, column by column
    np.testing.assert_array_equal(dynamics.gold, [dataset_classes.index(c) for c in names])
    assert any("class order of classes.json" in note for note in notes) == (recorded_classes == ("c", "a", "b"))
    read, expected = cartography(dynamics.logits, dynamics.gold), logged_scores(logged, gold)
    for score in ("confidence", "variability", "correctness"):
        np.testing.assert_allclose(read[score], expected[score], atol=1e-6, rtol=0)
    assert 0.05 < expected["variability"].mean() and expected["correctness"].mean() > 0.5   # it learned


def test_the_recorder_writes_the_reference_format(tmp_path):
    import torch

    recorder = DynamicsRecorder(tmp_path, classes=["neg", "pos"])
    logits = torch.tensor([[0.1, -0.2], [1.5, 2.5]], dtype=torch.bfloat16, requires_grad=True)
    recorder.log(torch.tensor([7, 3]), logits * 2, torch.tensor([1, 0]))
    recorder.log(np.array(["x"]), np.array([[0.25, 0.5]]), np.array([1]))
    assert recorder.n_logged == 3 and recorder.epoch == 0
    path = recorder.end_epoch()
    assert path == tmp_path / "training_dynamics" / "dynamics_epoch_0.jsonl" and recorder.epoch == 1
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["guid"] for line in lines] == ["7", "3", "x"]
    assert [line["gold"] for line in lines] == [1, 0, 1]
    assert lines[0]["logits_epoch_0"] == [float(np.float32(v)) for v in (logits * 2).detach().float().numpy()[0]]
    assert json.loads((tmp_path / "training_dynamics" / "classes.json").read_text()) == ["neg", "pos"]
    assert not list((tmp_path / "training_dynamics").glob(".*"))      # no temporary file left behind


def test_the_recorder_refuses_what_the_reader_could_not_use(tmp_path):
    recorder = DynamicsRecorder(tmp_path, classes=["a", "b", "c"])
    with pytest.raises(DynamicsError, match="nothing was logged in epoch 0"):
        recorder.end_epoch()
    recorder.log(["p", "q"], np.zeros((2, 3)), [0, 2])
    with pytest.raises(DynamicsError, match="id 'q' was logged twice in epoch 0"):
        recorder.log(["r", "q"], np.zeros((2, 3)), [0, 1])
    with pytest.raises(DynamicsError, match="id 's' was logged twice"):
        recorder.log(["s", "s"], np.zeros((2, 3)), [0, 1])
    with pytest.raises(DynamicsError, match=r"gold index 3 of example 't' is outside the classes \['a', 'b', 'c'\]"):
        recorder.log(["t"], np.zeros((1, 3)), [3])
    with pytest.raises(DynamicsError,
                       match=r"this batch has 2 logits per example; expected 3, one per class of \['a', 'b', 'c'\]"):
        recorder.log(["t"], np.zeros((1, 2)), [0])
    with pytest.raises(DynamicsError, match="class indices"):
        recorder.log(["t"], np.zeros((1, 3)), [0.5])
    with pytest.raises(DynamicsError, match=r"ids \(2\), logits \(1, 3\) and gold \(1,\)"):
        recorder.log(["t", "u"], np.zeros((1, 3)), [0])
    with pytest.raises(DynamicsError, match="shape"):
        recorder.log(["t"], np.zeros(3), [0])
    assert recorder.n_logged == 2          # nothing of a refused batch was kept
    free = DynamicsRecorder(tmp_path / "free")
    free.log(["a"], np.zeros((1, 2)), [1])
    with pytest.raises(DynamicsError, match=r"has 3 logits per example; expected 2, as in the earlier batches"):
        free.log(["b"], np.zeros((1, 3)), [1])
    with pytest.raises(DynamicsError, match="outside the 2 logits"):
        free.log(["b"], np.zeros((1, 2)), [2])
    with pytest.raises(DynamicsError, match="distinct"):
        DynamicsRecorder(tmp_path / "x", classes=["a", "a"])


def test_a_new_recorder_continues_after_the_epochs_in_the_folder_and_never_overwrites(tmp_path):
    first = DynamicsRecorder(tmp_path, classes=["a", "b"])
    for _ in range(2):
        first.log(["x", "y"], np.eye(2), [0, 1])
        first.end_epoch()
    folder = tmp_path / "training_dynamics"
    before = (folder / "dynamics_epoch_1.jsonl").read_bytes()
    resumed = DynamicsRecorder(tmp_path)                      # classes=None keeps classes.json
    assert resumed.epoch == 2 and resumed.classes == ("a", "b")
    with pytest.raises(DynamicsError, match="outside the classes"):
        resumed.log(["x"], np.zeros((1, 2)), [2])
    with pytest.raises(FileExistsError, match="dynamics_epoch_1.jsonl: exists already"):
        resumed.begin_epoch(1)
    with pytest.raises(FileExistsError, match="dynamics_epoch_0.jsonl: exists already"):
        DynamicsRecorder(tmp_path, start_epoch=0)
    with pytest.raises(DynamicsError, match=r"use the classes \['a', 'b'\], not \['b', 'a'\]"):
        DynamicsRecorder(tmp_path, classes=["b", "a"])
    resumed.log(["x", "y"], np.eye(2), [0, 1])
    with pytest.raises(DynamicsError, match="call end_epoch"):
        resumed.begin_epoch(5)
    assert resumed.end_epoch().name == "dynamics_epoch_2.jsonl"
    assert (folder / "dynamics_epoch_1.jsonl").read_bytes() == before
    dynamics, _ = read_reference_dynamics(tmp_path, ["y", "x"], classes=("a", "b"))
    assert dynamics.n_epochs == 3
    # epochs recorded without names cannot be continued under names: their indices would change meaning
    DynamicsRecorder(tmp_path / "plain").log(["x"], np.zeros((1, 2)), [0])
    unnamed = DynamicsRecorder(tmp_path / "plain2")
    unnamed.log(["x"], np.zeros((1, 2)), [0])
    unnamed.end_epoch()
    with pytest.raises(DynamicsError, match=r"epochs \[0\] were recorded without class names"):
        DynamicsRecorder(tmp_path / "plain2", classes=["a", "b"])
    assert DynamicsRecorder(tmp_path / "plain2").epoch == 1


def test_an_epoch_with_other_ids_than_the_last_is_written_with_a_warning(tmp_path):
    recorder = DynamicsRecorder(tmp_path)
    recorder.log(["a", "b"], np.zeros((2, 2)), [0, 1])
    recorder.end_epoch()
    recorder.log(["a"], np.zeros((1, 2)), [0])
    with pytest.warns(UserWarning, match="1 ids of the previous epoch are missing"):
        recorder.end_epoch()
    with pytest.raises(DynamicsError, match=r"1 dataset ids have no logits in epoch 1, e.g. \['b'\]"):
        read_reference_dynamics(tmp_path, ["a", "b"])


def test_callbacks_load_lazily_and_name_the_extra(monkeypatch):
    import analytics.recorder as recorder

    code = ("import sys, analytics.recorder; "
            "print(sorted(m for m in ('torch', 'transformers', 'lightning', 'pytorch_lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr        # importing the recorder imports no framework
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "analytics.integrations.hf", raising=False)
    with pytest.raises(ImportError, match=r"HFDynamicsCallback needs transformers and accelerate.*\[hf\]"):
        recorder.HFDynamicsCallback
    # also their submodules, which an earlier test in the session may have imported
    for name in [m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    monkeypatch.delitem(sys.modules, "analytics.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r"\[lightning\]"):
        from analytics.recorder import LightningDynamicsCallback  # noqa: F401
    with pytest.raises(AttributeError):
        recorder.NoSuchCallback


# --------------------------------------------------------------------------- Hugging Face Trainer


WORDS = "good great fine lovely bad awful poor dull movie film plot acting scene".split()


def tiny_text_task(tmp_path, n=24):
    """A word-level BERT tokenizer from a hand-written vocabulary and n short labelled texts."""
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    cues = {0: WORDS[:4], 1: WORDS[4:8], 2: WORDS[8:]}
    texts = [" ".join(rng.choice(cues[label], int(rng.integers(1, 4))).tolist() + rng.choice(WORDS[8:], 2).tolist())
             for label in labels]
    return tokenizer, texts, labels


def tiny_bert(tokenizer, n_classes):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=n_classes))


class TextSet:
    """A map-style dataset of tokenised texts; with ``ids``, each item carries its id as "guid"."""

    def __init__(self, tokenizer, texts, labels, ids=None):
        self.items = [{**tokenizer(text), "label": int(label)} for text, label in zip(texts, labels)]
        if ids is not None:
            for item, guid in zip(self.items, ids):
                item["guid"] = guid

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return dict(self.items[index])


def test_hf_trainer_records_the_training_pass_logits(tmp_path, one_thread):
    """A real Trainer run (label smoothing, padding collator, evaluation every epoch) writes the
    logits of every training forward, read back exactly in the dataset's class order."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from analytics.recorder import HFDynamicsCallback

    tokenizer, texts, labels = tiny_text_task(tmp_path)
    ids = [f"text-{i}" for i in range(len(texts))]
    recorded_order = ["neutral", "negative", "positive"]     # the model's label order, not sorted
    captured = []

    class CapturingTrainer(Trainer):
        """The logits the Trainer computes its training loss from: what must be recorded."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            if model.training:
                captured.append((inputs["guid"].ids, outputs.logits.detach().clone().numpy()))
            return (loss, outputs) if return_outputs else loss

    callback = HFDynamicsCallback(classes=recorded_order)
    args = TrainingArguments(output_dir=str(tmp_path / "bert"), num_train_epochs=3, per_device_train_batch_size=8,
                             learning_rate=1e-3, label_smoothing_factor=0.1, remove_unused_columns=False,
                             eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, seed=0)
    trainer = CapturingTrainer(model=tiny_bert(tokenizer, 3), args=args,
                               train_dataset=TextSet(tokenizer, texts, labels, ids),
                               eval_dataset=TextSet(tokenizer, texts[:8], labels[:8]),   # no ids: not recorded
                               data_collator=callback.collator(DataCollatorWithPadding(tokenizer)),
                               callbacks=[callback])
    trainer.train()

    # the model output folder (allenai/cartography layout) is accepted as it is
    assert find_dynamics_folder(tmp_path / "bert") == (tmp_path / "bert" / "training_dynamics").resolve()
    dataset_classes = sorted(recorded_order)
    names = [recorded_order[label] for label in labels]
    dynamics, _ = read_reference_dynamics(tmp_path / "bert", ids, classes=dataset_classes)
    logged = by_position(captured, ids, 3, 3)
    np.testing.assert_array_equal(dynamics.logits[0][..., [dataset_classes.index(c) for c in recorded_order]], logged)
    np.testing.assert_array_equal(dynamics.gold, [dataset_classes.index(name) for name in names])
    assert not any(handle for handle in callback._handles)     # hooks removed when training ended


def test_hf_trainer_without_the_id_column_fails_at_once_with_the_wiring(tmp_path, one_thread):
    from transformers import DataCollatorWithPadding, Trainer, TrainerState, TrainingArguments

    from analytics.recorder import HFDynamicsCallback

    tokenizer, texts, labels = tiny_text_task(tmp_path, n=8)
    callback = HFDynamicsCallback(tmp_path / "out")
    args = TrainingArguments(output_dir=str(tmp_path / "bert"), num_train_epochs=1, per_device_train_batch_size=4,
                             save_strategy="no", logging_strategy="no", report_to="none", use_cpu=True,
                             disable_tqdm=True)       # remove_unused_columns left at True: the ids are dropped
    trainer = Trainer(model=tiny_bert(tokenizer, 3), args=args,
                      train_dataset=TextSet(tokenizer, texts, labels, [str(i) for i in range(8)]),
                      data_collator=callback.collator(DataCollatorWithPadding(tokenizer)), callbacks=[callback])
    with pytest.raises(DynamicsError, match="remove_unused_columns=False"):
        trainer.train()
    assert not (tmp_path / "out" / "training_dynamics" / "dynamics_epoch_0.jsonl").exists()
    with pytest.raises(RuntimeError, match="in the middle of an epoch"):
        callback.on_epoch_begin(args, TrainerState(epoch=1.5), None)


# --------------------------------------------------------------------------- Lightning Trainer


def test_lightning_trainer_records_the_training_step_logits(tmp_path, one_thread):
    import lightning.pytorch as pl
    import torch

    from analytics.recorder import LightningDynamicsCallback

    rng = np.random.default_rng(2)
    n = 60
    features = rng.normal(size=(n, 4)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(int) + (features[:, 1] > 0.5)
    ids = [f"r{i}" for i in range(n)]
    captured = []

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"x": torch.from_numpy(features[i]), "labels": int(labels[i]), "guid": ids[i]}

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

        def training_step(self, batch, batch_idx):
            logits = self.net(batch["x"])
            captured.append((list(batch["guid"]), logits.detach().clone().numpy()))
            return {"loss": torch.nn.functional.cross_entropy(logits, batch["labels"]), "logits": logits}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[LightningDynamicsCallback(classes=["2", "0", "1"])])
    trainer.fit(Classifier(), torch.utils.data.DataLoader(Rows(), batch_size=16, shuffle=True))

    dynamics, _ = read_reference_dynamics(tmp_path, ids, classes=("0", "1", "2"))   # default_root_dir
    logged = by_position(captured, ids, 3, 3)
    np.testing.assert_array_equal(dynamics.logits[0][..., [2, 0, 1]], logged)
    np.testing.assert_array_equal(dynamics.gold, [[2, 0, 1][label] for label in labels])


def test_lightning_callback_names_the_training_step_contract(tmp_path):
    from analytics.recorder import LightningDynamicsCallback

    callback = LightningDynamicsCallback(tmp_path)
    with pytest.raises(DynamicsError, match="training_step must return a dict with 'loss' and 'logits'"):
        callback.on_train_batch_end(None, None, {"loss": 1.0}, {"guid": ["a"]}, 0)
    with pytest.raises(DynamicsError, match="nor the batch has 'labels'"):
        callback.on_train_batch_end(None, None, {"loss": 1.0, "logits": np.zeros((1, 2)), "guid": ["a"]},
                                    ({"labels": [1]},), 0)
    callback.on_train_batch_end(None, None, {"loss": 1.0, "logits": np.zeros((1, 2)), "guid": ["a"], "labels": [1]},
                                None, 0)
    assert callback.recorder.n_logged == 1


# --------------------------------------------------------------------------- the example


def test_the_example_writes_a_folder_the_command_line_opens(tmp_path):
    from analytics.cli import main
    from analytics.datasets import load_dataset
    from analytics.pipeline import load_run
    from analytics.samples import sample_by_key

    out = tmp_path / "mlp"
    done = subprocess.run([sys.executable, "examples/record_dynamics.py", "--out", str(out), "--epochs", "3"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epoch 2: training accuracy" in done.stdout
    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)
    recorded = json.loads((out / "training_dynamics" / "classes.json").read_text())
    assert sorted(recorded) == list(dataset.classes) and recorded != list(dataset.classes)   # not sorted
    ids = dataset.table["id"].tolist()
    dynamics, _ = read_reference_dynamics(out, ids, classes=dataset.classes, gold=dataset.label_codes)
    np.testing.assert_array_equal(dynamics.gold, dataset.label_codes)   # every id matched, gold remapped
    # the logits as written, in the recorder's order, give the scores the run shows
    written = np.zeros((3, len(ids), 2), dtype=np.float32)
    gold = np.zeros(len(ids), dtype=np.int64)
    position = {guid: i for i, guid in enumerate(ids)}
    for epoch in range(3):
        for line in (out / "training_dynamics" / f"dynamics_epoch_{epoch}.jsonl").read_text().splitlines():
            record = json.loads(line)
            written[epoch, position[record["guid"]]] = record[f"logits_epoch_{epoch}"]
            gold[position[record["guid"]]] = record["gold"]
    expected = logged_scores(written, gold)
    run_dir = tmp_path / "run"
    # (a small probe: it gives only the held-out probabilities here)
    assert main(["analyze", str(sample.path), "--label", "diagnosis", "--projection", "pca", "--probe-epochs", "2",
                 "--probe-seeds", "1", "--probe-hidden", "0", "--probe-scheme", "cross-fit",
                 "--dynamics", str(out), "--out", str(run_dir)]) == 0
    run = load_run(run_dir)
    assert run.manifest["dynamics"]["source"] == "reference" and run.manifest["dynamics"]["epochs"] == 3
    examples = run.examples.set_index("id").loc[ids]
    for score in ("confidence", "variability", "correctness"):
        np.testing.assert_allclose(examples[score].to_numpy(), expected[score], atol=1e-6, rtol=0)
