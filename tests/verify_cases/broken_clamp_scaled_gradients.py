"""Broken AMP rewrite of clamp_fp32.py: the clamp runs on still-scaled gradients (before
scaler.unscale_), so after unscaling every gradient is at most 0.05 / 65536: the weights barely
move. No clip function is called, so no protocol event sees it: only the updates do."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(20)]
scaler = torch.amp.GradScaler("cpu")

for x, y in batches:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    for p in model.parameters():
        p.grad.clamp_(-0.05, 0.05)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
