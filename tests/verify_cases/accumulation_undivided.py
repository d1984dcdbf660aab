"""Gradient accumulation over 4 micro-batches whose loss is not divided (AMP301): the fix
divides it, so the first step's gradients must be exactly the original's / 4. The deprecated
autocast in a function the script never calls is fixed too: that fix is not exercised."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
accum_steps = 4
batches = [(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(32)]

for i, (x, y) in enumerate(batches):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    if (i + 1) % accum_steps == 0:
        optimizer.step()
        optimizer.zero_grad()


def unused_amp_forward(x):  # never called here
    with torch.cpu.amp.autocast(dtype=torch.bfloat16):
        return model(x)
