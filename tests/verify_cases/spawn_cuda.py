"""A CUDA-only trainer started with torch.multiprocessing.spawn (one process), deprecated
torch.cuda.amp API: the child runs the training, so the child gets the harness and the shim."""
import torch
import torch.multiprocessing as mp
from torch import nn


def train(rank, steps):
    torch.manual_seed(rank)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.cuda.amp.GradScaler()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        x, y = torch.randn(16, 16).cuda(), torch.randn(16, 4).cuda()
        with torch.cuda.amp.autocast():
            loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()


if __name__ == "__main__":
    mp.spawn(train, args=(12,), nprocs=1)
