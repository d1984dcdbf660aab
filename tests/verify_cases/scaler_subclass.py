"""good_rewrite.py with a GradScaler subclass whose overrides call super(): each update is
counted once, as the base class's would be (the harness hooks a subclass's overrides too)."""
import torch
from torch import nn


class LoggingScaler(torch.amp.GradScaler):
    def update(self, new_scale=None):
        super().update(new_scale)
        self.updates = getattr(self, "updates", 0) + 1

    def unscale_(self, optimizer):
        super().unscale_(optimizer)


torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
accum = 2
batches = [(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(16)]
scaler = LoggingScaler("cpu")

for i, (x, y) in enumerate(batches):
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x), y) / accum
    scaler.scale(loss).backward()
    if (i + 1) % accum == 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
