"""An fp32 loop that clamps each gradient element before the step (a common guard)."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(16, 16), torch.randn(16, 4)) for _ in range(20)]

for x, y in batches:
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    for p in model.parameters():
        p.grad.clamp_(-0.05, 0.05)
    optimizer.step()
    optimizer.zero_grad()
