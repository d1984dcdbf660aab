"""The shape of the official AMP recipe (pytorch.org/tutorials/recipes/recipes/amp_recipe), scaled
down: a float32 baseline loop, then the same training with autocast and a GradScaler (here the
deprecated torch.cuda.amp API, which ampfix migrates), plus the recipe's illustration loops that
run zero epochs. Two phases: each is verified against the same phase of the other runs."""
import torch

device = "cuda"
batch_size, in_size, out_size, num_layers, num_batches, epochs = 32, 64, 64, 3, 6, 3
torch.manual_seed(0)
data = [torch.randn(batch_size, in_size, device=device) for _ in range(num_batches)]
targets = [torch.randn(batch_size, out_size, device=device) for _ in range(num_batches)]
loss_fn = torch.nn.MSELoss().cuda()


def make_model(in_size, out_size, num_layers):
    layers = []
    for _ in range(num_layers - 1):
        layers.append(torch.nn.Linear(in_size, in_size))
        layers.append(torch.nn.ReLU())
    layers.append(torch.nn.Linear(in_size, out_size))
    return torch.nn.Sequential(*tuple(layers)).cuda()


net = make_model(in_size, out_size, num_layers)
opt = torch.optim.SGD(net.parameters(), lr=0.001)
torch.cuda.reset_max_memory_allocated()
for epoch in range(epochs):
    for input, target in zip(data, targets):
        output = net(input)
        loss = loss_fn(output, target)
        loss.backward()
        opt.step()
        opt.zero_grad()
print("Default precision:", torch.cuda.max_memory_allocated())

for epoch in range(0):  # 0 epochs, this section is for illustration only
    for input, target in zip(data, targets):
        with torch.cuda.amp.autocast():
            output = net(input)
            loss = loss_fn(output, target)
        loss.backward()
        opt.step()
        opt.zero_grad()

use_amp = True
net = make_model(in_size, out_size, num_layers)
opt = torch.optim.SGD(net.parameters(), lr=0.001)
scaler = torch.cuda.amp.GradScaler(enabled=use_amp)
torch.cuda.reset_max_memory_allocated()
for epoch in range(epochs):
    for input, target in zip(data, targets):
        with torch.cuda.amp.autocast(enabled=use_amp):
            output = net(input)
            loss = loss_fn(output, target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
print("Mixed precision:", torch.cuda.max_memory_allocated())
