"""How well question text tells the dataset, and what a router on that guess earns (issue 14).

The dataset-name router is the parity target the policies miss at lambda 0.05 and 0.1,
where its gain is sending all of HotpotQA and SQuAD to one retrieval. This script asks
whether a stronger reader of the question could recover that label: per held-out question
(5-fold by id, one fold assignment) it compares

- ``tfidf``: the linear classifier of ``cascade_dataset_signal.py`` (character and word
  n-gram TF-IDF plus the MiniLM embedding, logistic regression);
- ``minilm-ft``: the bundled MiniLM fine-tuned end to end on the training folds' dataset
  names (mean pooling, a linear head, AdamW, ``--epochs``; about 4 minutes a fold on
  2 cores);

and prints each one's held-out accuracy, its confusion matrix, and per lambda the F1
reward of the router run on its guess (the training folds' best arm of the likeliest
dataset, and of the expected reward under the probabilities) beside the router that
knows the dataset and the best fixed arm.

    .venv/bin/python benchmarks/dataset_classifier.py --log bench-out/armlogs.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.cascade_dataset_signal import dataset_probabilities, router_on_guess  # noqa: E402
from benchmarks.policy_armlogs import router_arms  # noqa: E402
from policies.armlog import kfold_by_id  # noqa: E402
from policies.replay import load_replay_data  # noqa: E402


def finetuned_probabilities(model_path: str, questions, labels: np.ndarray, train, test,
                            epochs: int, seed: int = 0) -> np.ndarray:
    """P(dataset | question) for ``test`` from MiniLM fine-tuned on ``train``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    batch = AutoTokenizer.from_pretrained(model_path)(
        list(questions), padding=True, truncation=True, max_length=64, return_tensors="pt")
    encoder = AutoModel.from_pretrained(model_path)
    head = torch.nn.Linear(encoder.config.hidden_size, int(labels.max()) + 1)

    def logits(rows: np.ndarray):
        rows = torch.as_tensor(rows)
        mask = batch["attention_mask"][rows]
        hidden = encoder(input_ids=batch["input_ids"][rows], attention_mask=mask).last_hidden_state
        weight = mask.unsqueeze(-1).float()
        return head((hidden * weight).sum(1) / weight.sum(1))

    size = 32
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=5e-5,
                                  weight_decay=0.01)
    steps = epochs * -(-len(train) // size)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, steps)
    rng = np.random.default_rng(seed)
    encoder.train()
    for _ in range(epochs):
        order = rng.permutation(train)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            loss = torch.nn.functional.cross_entropy(logits(rows), torch.as_tensor(labels[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    encoder.eval()
    with torch.no_grad():
        return np.concatenate([torch.softmax(logits(test[s:s + 256]), -1).numpy()
                               for s in range(0, len(test), 256)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="bench-out/armlogs.duckdb")
    parser.add_argument("--lams", default="0.02,0.05,0.1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="fold assignment")
    args = parser.parse_args()
    from retrievers.encoder import Encoder

    encoder = Encoder("default")
    table, emb, _ = load_replay_data(args.log, encoder=encoder)
    names = np.array([key[0] for key in table.keys])
    datasets, labels = np.unique(names, return_inverse=True)
    splits = kfold_by_id(table.keys, 5, seed=args.seed)
    guesses = {"tfidf": np.zeros((len(table), len(datasets))),
               "minilm-ft": np.zeros((len(table), len(datasets)))}
    for fold, (train, test) in enumerate(splits):
        guesses["tfidf"][test] = dataset_probabilities(table.questions, emb, names, train,
                                                       test)[test]
        guesses["minilm-ft"][test] = finetuned_probabilities(
            encoder.path, table.questions, labels, np.asarray(train), np.asarray(test),
            args.epochs)
        print(f"fold {fold + 1}/5 done", file=sys.stderr, flush=True)
    for name, guess in guesses.items():
        predicted = guess.argmax(axis=1)
        print(f"\n{name}: held-out accuracy {(predicted == labels).mean():.3f}; rows: true, "
              "columns: guessed\n\n| dataset | " + " | ".join(datasets) + " |\n|"
              + "---|" * (len(datasets) + 1))
        for d, dataset in enumerate(datasets):
            counts = np.bincount(predicted[labels == d], minlength=len(datasets))
            print(f"| {dataset} | " + " | ".join(str(c) for c in counts) + " |")
    Q, C = table.quality["f1"], table.steps
    print("\nF1 reward of the router on each guess: likeliest dataset / expected reward\n\n"
          "| lambda | best fixed | router (knows the dataset) | "
          + " | ".join(f"router on {name}" for name in guesses) + " |\n|"
          + "---|" * (3 + len(guesses)))
    for lam in [float(v) for v in args.lams.split(",")]:
        R = Q - lam * C
        router = R[np.arange(len(R)), router_arms(splits, names, R)].mean()
        cells = []
        for guess in guesses.values():
            likeliest, expected = router_on_guess(R, names, guess, splits)
            cells.append(f"{likeliest.mean():.4f} / {expected.mean():.4f}")
        print(f"| {lam:g} | {R.mean(axis=0).max():.4f} | {router:.4f} | " + " | ".join(cells)
              + " |", flush=True)


if __name__ == "__main__":
    main()
