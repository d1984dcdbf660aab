"""A device-agnostic fp32 loop that picks its device the pytorch/examples way (torch.accelerator):
its AMP501 rewrite enables float16 autocast on CUDA only, so on a CPU machine verify runs it under
the CUDA shim, which must name CUDA through torch.accelerator too."""
import torch
from torch import nn

if torch.accelerator.is_available():
    device = torch.accelerator.current_accelerator()
else:
    device = torch.device("cpu")


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
