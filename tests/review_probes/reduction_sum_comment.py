import torch


def train(model, loader, optimizer, accum):
    criterion = torch.nn.CrossEntropyLoss()  # reduction="sum" would make the division wrong
    for i, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        loss.backward()
        if (i + 1) % accum == 0:
            optimizer.step()
            optimizer.zero_grad()
