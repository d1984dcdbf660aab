import torch


def train(model, opt, loader):
    grad_scaler = torch.amp.GradScaler()
    amp = grad_scaler
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x, y)
        amp.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        amp.step(opt)
        amp.update()
        opt.zero_grad()
