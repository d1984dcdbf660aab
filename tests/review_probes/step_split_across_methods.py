import torch


class Trainer:
    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters())
        self.grad_scaler = torch.amp.GradScaler()

    def backward(self, loss):
        self.grad_scaler.scale(loss).backward()

    def clip(self):
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)

    def train(self, loader):
        for x, y in loader:
            with torch.autocast("cuda"):
                loss = self.model(x, y)
            self.backward(loss)
            self.clip()
            self.grad_scaler.step(self.opt)
            self.grad_scaler.update()
            self.opt.zero_grad()
