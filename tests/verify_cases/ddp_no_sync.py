"""A DDP script (gloo on a CPU, two processes under torchrun): gradient accumulation with
`no_sync()` on the micro-batches that do not step. AMP101 rewrites its deprecated autocast."""
import contextlib

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DistributedDataParallel(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
data = torch.Generator().manual_seed(rank)  # each rank its own shard
accum = 2
for i in range(16):
    x, y = torch.randn(16, 16, generator=data), torch.randn(16, 4, generator=data)
    step = (i + 1) % accum == 0
    with contextlib.nullcontext() if step else model.no_sync():
        with torch.cpu.amp.autocast(dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x), y) / accum
        loss.backward()
    if step:
        optimizer.step()
        optimizer.zero_grad()
dist.destroy_process_group()
