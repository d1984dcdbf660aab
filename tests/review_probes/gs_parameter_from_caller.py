import torch


def train_step(model, opt, gs, x, y):
    with torch.autocast("cuda"):
        loss = model(x, y)
    gs.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    gs.step(opt)
    gs.update()
    opt.zero_grad()


def main(model, loader):
    opt = torch.optim.AdamW(model.parameters())
    grad_scaler = torch.amp.GradScaler()
    for x, y in loader:
        train_step(model, opt, grad_scaler, x, y)
