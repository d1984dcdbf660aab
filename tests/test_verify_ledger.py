"""The harness's ledger (``account_overhead``): its own time per step, without the code it wraps."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import time
import torch
from torch import nn

model = nn.Linear(8, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for step in range(20):
    loss = model(torch.randn(4, 8)).square().mean()
    scaler.scale(loss).backward()
    time.sleep(0.05)  # the script's own time: off the ledger's clock
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""


def _trace(tmp_path, account: bool) -> dict:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    config = {"mode": "original", "script": str(script), "steps": 8, "seed": 0, "threads": 1,
              "workdir": str(tmp_path), "trace": str(tmp_path / "trace.json"), "instrument": True,
              "count_flops": False, "account_overhead": account}
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-m", "ampfix.verify.harness", str(tmp_path / "config.json")],
                   env=env, cwd=tmp_path, check=True, timeout=300)
    return json.loads((tmp_path / "trace.json").read_text())


def test_the_ledger_counts_the_harness_and_not_the_script(tmp_path):
    trace = _trace(tmp_path, account=True)
    own, wall = trace["step_own_times"], trace["step_times"]
    assert len(own) == len(wall) > 0
    assert all(0 < o < 0.05 for o in own)  # each step sleeps 50 ms in the script: not the harness's
    assert all(w > 0.05 for w in wall)


def test_no_ledger_unless_asked(tmp_path):
    assert _trace(tmp_path, account=False)["step_own_times"] == []
