"""Its AMP rewrite with a GradScaler that starts too high: steps 0-2 overflow and are skipped
while the scale backs off (the normal warm-up, here forced). The fp32 reference skips the same
steps, so the later ones still compare."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 23, backoff_factor=0.25)
for i in range(8):
    x, y = torch.randn(16, 16), torch.randn(16, 4)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
