"""A Hogwild-style trainer (pytorch/examples mnist_hogwild): the parent starts one
torch.multiprocessing.Process that trains (CUDA-only, deprecated torch.cuda.amp API). With the
spawn start method (the argument, default) the child gets the harness and the shim; a forked
child cannot be followed. The model, a small CNN, is built by the parent (as Hogwild does): the
shim's bfloat16 choice for convolutions must reach the child."""
import sys

import torch
import torch.multiprocessing as mp
from torch import nn


def train(rank, model, steps):
    torch.manual_seed(rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.cuda.amp.GradScaler()
    for _ in range(steps):
        x, y = torch.randn(16, 2, 16).cuda(), torch.randn(16, 4).cuda()
        with torch.cuda.amp.autocast():
            loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1] if len(sys.argv) > 1 else "spawn", force=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14, 4)).cuda()
    process = mp.Process(target=train, args=(0, model, 12))
    process.start()
    process.join()
