"""The PyTorch counterpart of `adjoint train --text`: the same character language model
(`embed:D,pos,transformer:H x L,layernorm,fc`), the same data (windows of CONTEXT characters
every CONTEXT characters, the text's last 10% held out), AdamW with weight decay on weight
matrices only, a constant rate, batch 32. Prints one JSON line per epoch with the held-out
loss, so that the two can be compared after the same number of steps.

    python scripts/lm_torch.py FILE [--epochs 5] [--context 128] [--width 128] [--heads 4]
        [--layers 2] [--threads 2] [--seed 1]
"""

import argparse
import json
import math
import time

import torch
from torch import nn


class LanguageModel(nn.Module):
    def __init__(self, vocab, context, width, heads, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, vocab)

    def forward(self, ids):
        steps = ids.shape[1]
        x = self.embed(ids) + self.pos.weight[:steps]
        mask = nn.Transformer.generate_square_subsequent_mask(steps)
        for block in self.blocks:
            x = block(x, src_mask=mask, is_causal=True)
        return self.fc(self.norm(x))


def windows(ids, context):
    n = (len(ids) - 1) // context
    x = torch.tensor([ids[r * context : r * context + context] for r in range(n)])
    y = torch.tensor([ids[r * context + 1 : r * context + context + 1] for r in range(n)])
    return x, y


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.file, encoding="utf-8").read()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = [index[c] for c in text]
    held = round(len(ids) * 0.1)
    train_x, train_y = windows(ids[: len(ids) - held], a.context)
    test_x, test_y = windows(ids[len(ids) - held :], a.context)
    model = LanguageModel(len(vocab), a.context, a.width, a.heads, a.layers)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    for epoch in range(1, a.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x))
        total, seen, start = 0.0, 0, time.perf_counter()
        for s in range(0, len(order), a.batch):
            rows = order[s : s + a.batch]
            logits = model(train_x[rows])
            loss = loss_fn(logits.reshape(-1, len(vocab)), train_y[rows].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
            seen += len(rows)
            steps += 1
        train_seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            test_sum = 0.0
            for s in range(0, len(test_x), a.batch):
                logits = model(test_x[s : s + a.batch])
                test_sum += loss_fn(logits.reshape(-1, len(vocab)), test_y[s : s + a.batch].reshape(-1)).item() * len(
                    test_x[s : s + a.batch]
                )
            test_loss = test_sum / len(test_x)
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "steps": steps,
                    "train_loss": total / seen,
                    "test_loss": test_loss,
                    "test_bits_per_char": test_loss / math.log(2),
                    "train_seconds": train_seconds,
                    "step_ms": 1000 * train_seconds / math.ceil(len(train_x) / a.batch),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
