import torch


def train(model, opt, loader):
    gs = torch.amp.GradScaler()
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x, y)
        gs.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        gs.step(opt)
        gs.update()
        opt.zero_grad()
