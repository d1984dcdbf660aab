"""A matmul-heavy fp32 training loop on CUDA (an MLP of 4096-wide layers, batch 1024): what
`ampfix check` converts with AMP501 and `bench/verify_gpu.py` verifies and times on a GPU."""
import torch
from torch import nn

device = torch.device("cuda")
torch.manual_seed(0)
model = nn.Sequential(
    nn.Linear(4096, 4096), nn.GELU(), nn.Linear(4096, 4096), nn.GELU(),
    nn.Linear(4096, 4096), nn.GELU(), nn.Linear(4096, 1000),
).to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
criterion = nn.CrossEntropyLoss()
inputs = torch.randn(1024, 4096, device=device)
targets = torch.randint(0, 1000, (1024,), device=device)

for step in range(60):
    optimizer.zero_grad()
    outputs = model(inputs)
    loss = criterion(outputs, targets)
    loss.backward()
    optimizer.step()
