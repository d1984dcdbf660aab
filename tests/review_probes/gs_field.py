import torch


class Trainer:
    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=0.1)
        self.gs = torch.amp.GradScaler()

    def step(self, x, y):
        with torch.autocast("cuda"):
            loss = self.model(x, y)
        self.gs.scale(loss).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.gs.step(self.opt)
        self.gs.update()
        self.opt.zero_grad()
