"""Its AMP rewrite, as the AMP docs show two optimizers: one scaler, `scaler.step` per
optimizer, one `update()` per iteration. One training step = both optimizer steps."""
import torch
from torch import nn

torch.manual_seed(0)
generator = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
critic = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
opt_g = torch.optim.SGD(generator.parameters(), lr=0.01)
opt_d = torch.optim.SGD(critic.parameters(), lr=0.01)
data = [torch.randn(16, 16) for _ in range(8)]
scaler = torch.amp.GradScaler("cpu")

for real in data:
    noise = torch.randn(16, 8)
    opt_d.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss_d = nn.functional.mse_loss(critic(real), torch.ones(16, 1)) + nn.functional.mse_loss(
            critic(generator(noise).detach()), torch.zeros(16, 1))
    scaler.scale(loss_d).backward()
    scaler.step(opt_d)
    opt_g.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss_g = nn.functional.mse_loss(critic(generator(noise)), torch.ones(16, 1))
    scaler.scale(loss_g).backward()
    scaler.step(opt_g)
    scaler.update()
