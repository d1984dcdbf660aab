"""A small CNN with BatchNorm, trained with Adam in float32 (its conv bias before BatchNorm has
a true gradient of zero: Adam turns rounding noise there into +-lr steps)."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 14 * 14, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
batches = [(torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))) for _ in range(20)]

for x, y in batches:
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
