"""A device-agnostic fp32 loop whose device comes from the environment, not from torch: its AMP501
rewrite enables autocast on CUDA only, and the CUDA shim cannot move it off its CPU branch. On a
CPU machine nothing can be tested: exit 2, never a failure of the rewrite."""
import os

import torch
from torch import nn

device = torch.device(os.environ.get("AMPFIX_TEST_DEVICE", "cpu"))

def train(model, device, optimizer, batches):
    criterion = nn.MSELoss()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        output = model(x)
        loss = criterion(output, y)
        loss.backward()
        optimizer.step()


def main():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [(torch.randn(128, 32), torch.randn(128, 4)) for _ in range(5)]
    for epoch in range(2):
        train(model, device, optimizer, batches)


if __name__ == "__main__":
    main()
