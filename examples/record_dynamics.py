"""Record training dynamics from your own PyTorch training loop, then map them.

Trains a small MLP on the bundled breast-cancer table (569 biopsies, 30 features) with a plain
PyTorch loop and records every example's logits in the training pass of each epoch with
``analytics.recorder.DynamicsRecorder``. It writes ``OUT/training_dynamics/`` (one
``dynamics_epoch_{e}.jsonl`` per epoch and ``classes.json``), which the command line and the
app open as a dynamics folder:

    .venv/bin/python examples/record_dynamics.py --out runs/mlp
    cartographer analyze sample_data/breast_cancer.csv --label diagnosis --dynamics runs/mlp --out runs/map

The ids are the dataset's ids exactly as the app and the command line load it (this table has
no id column, so they are derived from each row's content): load your data with
``analytics.datasets.load_dataset`` and the same column roles to get them, or use your own id
column. Runs in a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from analytics.datasets import load_dataset
from analytics.recorder import DynamicsRecorder
from analytics.samples import sample_by_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the model output folder (gets training_dynamics/)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sample = sample_by_key("breast-cancer")
    dataset = load_dataset(sample.path, roles=sample.roles)   # as `--label diagnosis` loads it
    table = dataset.table
    features = table[dataset.feature_columns].select_dtypes("number").to_numpy(np.float32)
    features = (features - features.mean(0)) / features.std(0)
    # Any label order works: classes.json records it, and the reader maps it to the dataset's.
    classes = list(dict.fromkeys(table["label"]))             # in order of first appearance
    gold = np.array(table["label"].map({name: index for index, name in enumerate(classes)}), dtype=np.int64)
    ids = table["id"].to_numpy()

    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(features.shape[1], 32), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(32, len(classes)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    x, y = torch.from_numpy(features), torch.from_numpy(gold)
    recorder = DynamicsRecorder(args.out, classes=classes)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        correct = 0
        for batch in torch.randperm(len(y), generator=generator).split(args.batch_size):
            logits = model(x[batch])
            loss = torch.nn.functional.cross_entropy(logits, y[batch])
            recorder.log(ids[batch.numpy()], logits, y[batch])   # the training pass, before the step
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            correct += int((logits.argmax(1) == y[batch]).sum())
        path = recorder.end_epoch()
        print(f"epoch {epoch}: training accuracy {correct / len(y):.3f}, wrote {path}")
    print(f"next: cartographer analyze {sample.path} --label diagnosis --dynamics {args.out} --out RUN_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
