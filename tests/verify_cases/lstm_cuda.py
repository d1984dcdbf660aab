"""A CUDA-only word-LM-style loop (an LSTM, deprecated torch.cuda.amp API). On a CPU machine it
runs under the CUDA shim, in bfloat16: float16 LSTM kernels do not exist on the CPU."""
import torch
from torch import nn

torch.manual_seed(0)
device = torch.device("cuda")


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.rnn = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 50)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


model = Model().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
scaler = torch.cuda.amp.GradScaler()
data = torch.randint(0, 50, (12, 8, 10), device=device)
for tokens in data:
    optimizer.zero_grad()
    with torch.cuda.amp.autocast():
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1))
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    scaler.step(optimizer)
    scaler.update()
