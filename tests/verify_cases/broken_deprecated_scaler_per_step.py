"""Broken rewrite of base.py: a deprecated-API GradScaler created every micro-batch (the site
reported must be this file's line, not torch's own wrapper class)."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
accum = 2
batches = [(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(16)]

for i, (x, y) in enumerate(batches):
    scaler = torch.cpu.amp.GradScaler()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x), y) / accum
    scaler.scale(loss).backward()
    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
