"""Variance of Gradients (Agarwal et al., CVPR 2022): the accumulator and the score by hand, the
probe's closed-form input gradients and the checkpoints' autograd ones against a per-example
autograd loop, and the score in the registry."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from analytics import dynamics as dynamics_module
from analytics import vog as vog_module
from analytics.checkpoints import load_checkpoint, run_checkpoint_gradients
from analytics.datasets import load_dataset
from analytics.dynamics import ProbeConfig, checkpoint_dynamics, cross_fit_dynamics, fit_probe_run, train_probe
from analytics.embeddings import checkpoint_outputs, tabular_features
from analytics.samples import sample_by_key
from analytics.scores import SCORES, ScoreInputs, compute_scores
from analytics.vog import (
    EXACT_MAX,
    PROJECTED_DIMS,
    VogAccumulator,
    normalise_within_class,
    projection_for,
    reduce_gradients,
)

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

# 4 examples × 2 dimensions × 3 epochs, worked by hand (population variance over the epochs):
#   example 0: dim 0 = 1, 3, 5 (mean 3, var 8/3); dim 1 = 2, 2, 2 (var 0)    → VoG (8/3 + 0)/2 = 4/3
#   example 1: dim 0 = 0, 0, 0;  dim 1 = 0, 3, 0 (mean 1, var (1+4+1)/3 = 2)  → VoG 1
#   example 2: constant (2, −2)                                              → VoG 0
#   example 3: dim 0 = 1, 1, 4 (mean 2, var 2); dim 1 = 1, 1, −2 (mean 0, var 2) → VoG 2
# Classes 0 = {0, 1}: mean 7/6, std 1/6 → z = +1, −1; class 1 = {2, 3}: mean 1, std 1 → −1, +1.
HAND_GRADIENTS = np.array([
    [[1, 2], [0, 0], [2, -2], [1, 1]],
    [[3, 2], [0, 3], [2, -2], [1, 1]],
    [[5, 2], [0, 0], [2, -2], [4, -2]],
], dtype=np.float64)
HAND_RAW = np.array([4 / 3, 1.0, 0.0, 2.0])
HAND_LABELS = np.array([0, 0, 1, 1])
HAND_VOG = np.array([1.0, -1.0, -1.0, 1.0])


def test_accumulator_and_score_by_hand():
    accumulator = VogAccumulator(4, 2)
    assert accumulator.projection is None and accumulator.width == 2
    for epoch, grads in enumerate(HAND_GRADIENTS):
        if epoch < 2:
            np.testing.assert_array_equal(accumulator.raw(), 0.0)  # fewer than two epochs: no variance yet
        else:  # after epochs 0 and 1: example 0 var(1, 3) / 2 = 0.5, example 1 var(0, 3) / 2 = 1.125
            np.testing.assert_allclose(accumulator.raw(), [0.5, 1.125, 0.0, 0.0], rtol=1e-12)
        accumulator.add([3, 0], grads[[3, 0]])                   # any order, any batching
        accumulator.add([1, 2], torch.from_numpy(grads[[1, 2]]))
        accumulator.end_epoch()
    np.testing.assert_allclose(accumulator.raw(), HAND_RAW, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(normalise_within_class(HAND_RAW, HAND_LABELS), HAND_VOG, rtol=1e-12)
    table = compute_scores(ScoreInputs(labels=HAND_LABELS, vog_raw=accumulator.raw()))
    np.testing.assert_allclose(table["vog"], HAND_VOG, rtol=1e-12)


def test_accumulator_refuses_a_second_or_a_missing_gradient():
    accumulator = VogAccumulator(3, 2)
    accumulator.add([0, 1], np.ones((2, 2)))
    with pytest.raises(ValueError, match="two gradients in one epoch"):
        accumulator.add([1], np.ones((1, 2)))
    with pytest.raises(ValueError, match="1 examples got no gradient"):
        accumulator.end_epoch()
    with pytest.raises(ValueError, match="3 dimensions; expected 2"):
        accumulator.add([2], np.ones((1, 3)))


def test_welford_keeps_a_small_spread_around_a_large_mean():
    """E[x²] − E[x]² in float64 would lose this variance to cancellation; Welford does not."""
    rng = np.random.default_rng(0)
    grads = 1e6 + rng.normal(scale=1e-3, size=(5, 20, 3))
    accumulator = VogAccumulator(20, 3)
    for epoch in grads:
        accumulator.add(np.arange(20), epoch)
        accumulator.end_epoch()
    np.testing.assert_allclose(accumulator.raw(), grads.var(axis=0).mean(axis=1), rtol=1e-6)


def test_float32_running_mean_agrees_with_float64(monkeypatch):
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(4, 300, 16)).astype(np.float32) * rng.uniform(0.1, 3, size=(1, 300, 1))
    wide = VogAccumulator(300, 16)
    monkeypatch.setattr(vog_module, "FLOAT64_MAX", 0)  # the large-n path
    narrow = VogAccumulator(300, 16)
    assert narrow.dtype == np.float32
    for epoch in grads:
        for accumulator in (wide, narrow):
            accumulator.add(np.arange(300), epoch)
            accumulator.end_epoch()
    assert wide.dtype == np.float64
    np.testing.assert_allclose(narrow.raw(), wide.raw(), rtol=1e-5)
    np.testing.assert_allclose(wide.raw(), grads.astype(np.float64).var(axis=0).mean(axis=1), rtol=1e-10)


def test_projection_is_chosen_by_size_and_unbiased():
    assert projection_for(EXACT_MAX // 384, 384) is None
    big = projection_for(EXACT_MAX // 384 + 1, 384)
    assert big.shape == (384, PROJECTED_DIMS) and big.dtype == np.float32 and not big.flags.writeable
    np.testing.assert_array_equal(big, projection_for(10**6, 384))  # the same matrix in every process
    assert projection_for(10, 32, dims=64) is None                  # no wider than the gradients
    # A 1M-example probe run (384-d embeddings) stays within a few hundred MB.
    assert VogAccumulator(1_000_000, 384).nbytes < 300 * 2**20
    # Unbiased: over many projections the estimate averages to the exact VoG.
    rng = np.random.default_rng(2)
    grads = rng.normal(size=(6, 3, 96)) * np.array([0.1, 1.0, 3.0])[None, :, None]
    exact = grads.var(axis=0).mean(axis=1)
    estimates = []
    for seed in range(200):
        accumulator = VogAccumulator(3, 96, dims=16, seed=seed)
        for epoch in grads:
            accumulator.add(np.arange(3), epoch)
            accumulator.end_epoch()
        estimates.append(accumulator.raw())
    np.testing.assert_allclose(np.mean(estimates, axis=0), exact, rtol=0.05)
    # A worker's reduced gradients accumulate to the same value as the accumulator's own projection.
    projected = VogAccumulator(3, 96, dims=16, seed=5)
    given = VogAccumulator(3, 16, dims=None)
    for epoch in grads.astype(np.float32):
        projected.add(np.arange(3), epoch)
        given.add(np.arange(3), reduce_gradients(epoch, n=3, dims=16, seed=5))
        projected.end_epoch()
        given.end_epoch()
    np.testing.assert_allclose(given.raw(), projected.raw(), rtol=1e-6)


def test_vog_is_a_registered_score_that_needs_vog_raw():
    score = SCORES["vog"]
    assert score.requires == ("labels", "vog_raw") and score.direction == "higher = harder"
    assert "Agarwal" in score.reference and not score.per_example
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 50)
    logits = rng.normal(size=(1, 3, 50, 3))
    assert "vog" not in compute_scores(ScoreInputs(labels=labels, logits_by_epoch=logits)).columns
    raw = rng.uniform(size=50)
    table = compute_scores(ScoreInputs(labels=labels, logits_by_epoch=logits, vog_raw=raw))
    np.testing.assert_allclose(table["vog"], normalise_within_class(raw, labels))
    for label in range(3):
        within = table["vog"][labels == label]
        assert abs(within.mean()) < 1e-12 and abs(within.std(ddof=0) - 1) < 1e-12


# --------------------------------------------------------------------------- the probe


def tiny_problem(n=48, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    features = (rng.normal(size=(k, d))[labels] + rng.normal(size=(n, d))).astype(np.float32)
    return features, labels


def brute_force_vog(snapshots: list[tuple], d: int, k: int, hidden: int, x: torch.Tensor, labels) -> np.ndarray:
    """∂ z[y] / ∂ x by autograd, one example at a time, for the head saved at each epoch's end;
    then the formula: population variance over epochs, mean over dimensions."""
    per_epoch = []
    for first_weight, first_bias, last_weight in snapshots:
        model = dynamics_module._head(d, k, hidden)
        with torch.no_grad():
            model[0].weight.copy_(first_weight)
            model[0].bias.copy_(first_bias)
            model[2].weight.copy_(last_weight)  # the last bias does not change the gradient
        model.eval()
        rows = []
        for i in range(len(labels)):
            xi = x[i].clone().requires_grad_()
            (gradient,) = torch.autograd.grad(model(xi[None])[0, int(labels[i])], xi)
            rows.append(gradient.numpy().astype(np.float64))
        per_epoch.append(rows)
    gradients = np.array(per_epoch)                                   # (epochs, n, d)
    return gradients.var(axis=0).mean(axis=1)


def test_probe_vog_equals_a_per_example_autograd_loop(monkeypatch):
    features, labels = tiny_problem()
    x = torch.from_numpy(dynamics_module._standardise(features))
    seen = []
    original = dynamics_module._probe_vog

    def spy(snapshots, *args):
        seen.append([tuple(p.clone() for p in snapshot) for snapshot in snapshots])
        return original(snapshots, *args)

    monkeypatch.setattr(dynamics_module, "_probe_vog", spy)
    config = ProbeConfig(hidden=7, epochs=4, seeds=1, batch_size=16)
    every = np.arange(len(labels))
    result = fit_probe_run(x, torch.from_numpy(labels), every, every, 0, 3, config)
    (snapshots,) = seen
    assert len(snapshots) == config.epochs
    # The last snapshot is the trained head: log p − W₂ relu(W₁x + b₁) = b₂ − log Z(x), so its
    # differences between classes are the same on every row.
    first_weight, first_bias, last_weight = (p.double() for p in snapshots[-1])
    partial_logits = torch.relu(x.double() @ first_weight.T + first_bias) @ last_weight.T
    offsets = torch.log(torch.from_numpy(result["held_probs"]).double()) - partial_logits
    between_classes = (offsets - offsets[:, :1]).numpy()
    np.testing.assert_allclose(between_classes, np.broadcast_to(between_classes[:1], between_classes.shape), atol=1e-5)
    expected = brute_force_vog(snapshots, 5, 3, 7, x, labels)
    assert expected.min() > 0
    np.testing.assert_allclose(result["vog"], expected, rtol=1e-6)


def test_probe_vog_is_averaged_over_seeds_or_taken_from_the_first_cross_fitted_probe(monkeypatch):
    features, labels = tiny_problem(n=60)
    config = ProbeConfig(hidden=6, epochs=3, seeds=2, batch_size=16)
    runs = []  # (training rows, rows whose VoG was computed, their raw VoG) of every probe trained
    original = dynamics_module.fit_probe_run

    def spy(features, gold, train_rows, *args, vog_rows=None, **kwargs):
        result = original(features, gold, train_rows, *args, vog_rows=vog_rows, **kwargs)
        runs.append((np.asarray(train_rows), np.arange(len(train_rows)) if vog_rows is None else vog_rows,
                     result["vog"]))
        return result

    monkeypatch.setattr(dynamics_module, "fit_probe_run", spy)
    independent = train_probe(features, labels, 3, config)
    assert len(runs) == 2 and all(len(vog) == 60 for _, _, vog in runs)
    np.testing.assert_allclose(independent.vog, (runs[0][2] + runs[1][2]) / 2, rtol=1e-12)

    runs.clear()
    crossed, _, fold = cross_fit_dynamics(features, labels, 3, config)
    expected, computed = np.zeros(len(labels)), np.zeros(len(labels), dtype=int)
    for model, (rows, positions, vog) in enumerate(runs):
        assert set(fold[rows]) == set(range(config.seeds + 1)) - {model}  # probe j never sees fold j
        first = rows[positions]                     # the rows whose seed-0 trajectory this probe gives
        np.testing.assert_array_equal(np.sort(first), np.flatnonzero((fold > 0) if model == 0 else
                                                                     (fold == 0) if model == 1 else fold < 0))
        expected[first] = vog
        computed[first] += 1
    np.testing.assert_array_equal(computed, 1)
    np.testing.assert_allclose(crossed.vog, expected, rtol=1e-12)
    # the VoG of a subset of a probe's rows is that of the whole run at those rows
    train_rows, positions, vog = runs[1]
    x, y = torch.from_numpy(dynamics_module._standardise(features)), torch.from_numpy(labels)
    whole = original(x, y, train_rows, np.flatnonzero(fold == 1), 1, 3, config)["vog"]
    np.testing.assert_allclose(vog, whole[positions], rtol=1e-12)

    linear = train_probe(features, labels, 3, ProbeConfig(hidden=0, epochs=3, seeds=1))
    assert linear.vog is None  # a linear head's input gradient is its class's weight row
    assert train_probe(features, labels, 3, ProbeConfig(hidden=6, epochs=3, seeds=1, vog=False)).vog is None


def test_probe_vog_on_a_real_sample_is_finite_and_scored():
    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)
    features, labels = tabular_features(dataset), dataset.label_codes
    dynamics = train_probe(features, labels, len(dataset.classes), ProbeConfig(epochs=4, seeds=1))
    assert dynamics.vog.shape == (len(labels),) and np.isfinite(dynamics.vog).all() and dynamics.vog.min() > 0
    table = compute_scores(ScoreInputs(labels=labels, logits_by_epoch=dynamics.logits, vog_raw=dynamics.vog))
    assert np.isfinite(table["vog"]).all() and table["vog"].std() > 0.5


# --------------------------------------------------------------------------- checkpoints


class Mlp(torch.nn.Module):
    def __init__(self, d: int, k: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = torch.nn.Linear(d, 8)
        self.out = torch.nn.Linear(8, k)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))


class Lookup(torch.nn.Module):
    """Logits that depend on the input only through an argmax: no input gradient exists."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(d, k))

    def forward(self, x):
        return self.table[x.argmax(dim=1)]


@pytest.fixture
def table_dataset(tmp_path):
    rng = np.random.default_rng(4)
    rows = ["a,b,c,d,label"] + [",".join(f"{v:.4f}" for v in rng.normal(size=4)) + f",{'xyz'[i % 3]}"
                                for i in range(30)]
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    return load_dataset(tmp_path / "table.csv")


def scripted(tmp_path, name: str, module: torch.nn.Module) -> str:
    path = tmp_path / name
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


def test_checkpoint_vog_equals_a_per_example_autograd_loop(tmp_path, table_dataset):
    modules = [Mlp(4, 3, seed) for seed in range(3)]
    paths = [scripted(tmp_path, f"epoch{e}.pt", module) for e, module in enumerate(modules)]
    labels = table_dataset.label_codes
    run_one = functools.partial(checkpoint_outputs, table_dataset, output="logits", batch_size=7)
    notes: list[str] = []

    dynamics = checkpoint_dynamics(paths, labels, run_one=run_one, notes=notes)

    x = torch.from_numpy(tabular_features(table_dataset))
    gradients = []
    for module in modules:
        rows = []
        for i, label in enumerate(labels):
            xi = x[i].clone().requires_grad_()
            (gradient,) = torch.autograd.grad(module(xi[None])[0, label], xi)
            rows.append(gradient.numpy().astype(np.float64))
        gradients.append(rows)
    expected = np.array(gradients).var(axis=0).mean(axis=1)
    assert not notes and dynamics.vog is not None
    np.testing.assert_allclose(dynamics.vog, expected, rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(dynamics.logits[0, 2], modules[2](x).numpy(), rtol=1e-6)


def test_a_checkpoint_without_input_gradients_leaves_vog_out_with_a_note(tmp_path, table_dataset):
    paths = [scripted(tmp_path, "epoch0.pt", Mlp(4, 3, 0)), scripted(tmp_path, "epoch1.pt", Lookup(4, 3))]
    notes: list[str] = []
    dynamics = checkpoint_dynamics(paths, table_dataset.label_codes, notes=notes,
                                   run_one=functools.partial(checkpoint_outputs, table_dataset, output="logits"))
    assert dynamics.vog is None and dynamics.logits.shape == (1, 2, 30, 3)
    assert len(notes) == 1 and "No Variance of Gradients" in notes[0] and "epoch1.pt" in notes[0]


def test_text_model_gradient_is_summed_over_real_tokens(tmp_path):
    """A transformers text classifier: the gradient with respect to the input token embeddings,
    summed over positions; padding in a batch must not change an example's gradient."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                     num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    folder = tmp_path / "bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    texts, gold = ["the cat sat on the mat", "a dog", "the dog sat"], np.array([2, 0, 1])

    logits, gradients, note = run_checkpoint_gradients(load_checkpoint(folder), texts=texts, gold=gold, batch_size=3)

    assert note is None and gradients.shape == (3, 16)
    for i, text in enumerate(texts):
        encoded = tokenizer([text], return_tensors="pt")
        embeds = model.get_input_embeddings()(encoded["input_ids"]).detach().requires_grad_()
        output = model(inputs_embeds=embeds, attention_mask=encoded["attention_mask"]).logits
        (expected,) = torch.autograd.grad(output[0, gold[i]], embeds)
        np.testing.assert_allclose(gradients[i], expected[0].sum(dim=0).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(logits[i], output[0].detach().numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the Hardness page


def test_hardness_page_lists_vog_with_its_direction(use_analysed_workspace, clean_app_caches):
    from analytics.hardness import HARDER_IS_HIGHER, numeric_scores
    from tests.conftest import open_page

    assert HARDER_IS_HIGHER["vog"] == (SCORES["vog"].direction == "higher = harder")
    assert "vog" in numeric_scores(["confidence", "vog"])
    at = open_page("views/hardness.py", "breast-cancer")
    assert not at.exception
    assert "vog" in at.selectbox(key="hardness_score").options
    at.selectbox(key="hardness_score").select("vog").run()
    assert any("Higher = harder" in c.value and "Agarwal" in c.value for c in at.caption)
    ranked = at.dataframe[0].value
    assert np.isfinite(ranked["vog"]).all() and ranked["vog"].is_monotonic_decreasing  # hardest first
