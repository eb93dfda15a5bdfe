"""PyTorch's side of `cargo run --release --example bench_transformer -- --step`: the same
character transformer (embedding 65×128 + learned positions, 4 pre-norm GELU encoder layers
of 4 heads, feed-forward 512, causal, no dropout, final norm, linear head), batch 32 ×
context 128, AdamW 3e-4 with decay 0.1 on matrices. Prints the median step time.

    ~/.cache/adjoint-bench-venv/bin/python scripts/bench_transformer_torch.py --threads 2
"""

import argparse
import statistics
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--steps", type=int, default=10)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(1)
vocab, width, context, batch = 65, 128, 128, 32


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.positions = torch.nn.Parameter(torch.randn(context, width))
        layer = torch.nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.layers = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab)

    def forward(self, ids):
        x = self.embed(ids) + self.positions[: ids.shape[1]]
        mask = torch.nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
        return self.head(self.norm(self.layers(x, mask=mask, is_causal=True)))


model = Model()
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-4)
times = []
for i in range(args.steps + 3):
    ids = torch.randint(0, vocab, (batch, context + 1))
    start = time.perf_counter()
    logits = model(ids[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad()
    if i >= 3:
        times.append(time.perf_counter() - start)
    if i == 0:
        print(f"first_loss={loss.item():.4f}")
print(f"step_ms={1e3 * statistics.median(times):.2f}")
