#!/usr/bin/env python3
"""Editor-server latency over a 5,000-line document, with a raw JSON-RPC client over stdio.

    python bench/server_latency.py                       # this checkout's `ampfix server`
    python bench/server_latency.py --code /tmp/old-checkout --ruff --rounds 20

Measured (medians of ``--rounds``), for each server with the same client and document:
- edit -> diagnostics: a ``didChange`` until the ``publishDiagnostics`` of that version;
- a burst of 10 edits sent back to back until the diagnostics of the last one, and how many
  versions were published in all (coalescing publishes only the last);
- a code action at a finding, and one on a clean line, on the version whose diagnostics came;
- (ampfix) from that code action to its quick fix's judged edit: with the action, or from
  ``codeAction/resolve`` when the action was offered before its fix was judged;
- (ampfix) ``codeAction/resolve`` of the fix-all action, when the server makes it lazy.

``--ruff`` drives ``ruff server`` too (``--select F``-like defaults, push diagnostics: the client
does not offer pull diagnostics). ``--code`` is the ampfix checkout run (``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HEADER = """\
import torch
import torch.nn as nn

scaler = torch.cuda.amp.GradScaler()


def train(model, loader, optimizer):
    for x, y in loader:
        optimizer.zero_grad()
        with torch.cuda.amp.autocast():
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
"""

BLOCK = """\


def helper_{i}(values, scale={i}):
    total = 0
    for value in values:
        if value > scale:
            total += value * 2
        else:
            total -= value
    return total
"""


LIGHT_HEADER = "import torch\n\n\ndef train(model, x):\n    return model(x)\n"


def document(lines: int = 5000, kind: str = "training") -> str:
    """``training``: two deprecated AMP calls with fixes (their validation is most of an analysis),
    then plain functions; ``light``: the same functions, nothing AMP (the server's own cost)."""
    text, i = (HEADER if kind == "training" else LIGHT_HEADER), 0
    while text.count("\n") < lines:
        text += BLOCK.format(i=i)
        i += 1
    return text


class Client:
    """A minimal LSP client: requests answered by id, notifications queued by method."""

    def __init__(self, command: list[str], env: dict, cwd: str):
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        self.next_id = 0
        self.answers: dict[int, queue.Queue] = {}
        self.diagnostics: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = 0
            while True:
                line = stream.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            message = json.loads(stream.read(length))
            arrived = time.perf_counter()
            if "id" in message and "method" not in message:
                self.answers.setdefault(message["id"], queue.Queue()).put((arrived, message))
            elif message.get("method") == "textDocument/publishDiagnostics":
                self.diagnostics.put((arrived, message["params"]))
            elif "id" in message:  # a request from the server (registerCapability...): accept it
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})

    def _send(self, message: dict) -> None:
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def request(self, method: str, params) -> tuple[float, dict]:
        """(seconds to the answer, the answer)."""
        self.next_id += 1
        number = self.next_id
        box = self.answers.setdefault(number, queue.Queue())
        start = time.perf_counter()
        self._send({"jsonrpc": "2.0", "id": number, "method": method, "params": params})
        arrived, message = box.get(timeout=120)
        return arrived - start, message.get("result")

    def notify(self, method: str, params) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def diagnostics_of(self, uri: str, version: int) -> tuple[float, list, int]:
        """(arrival time, diagnostics) of ``version``'s publication, and how many publications of
        that document came before it."""
        before = 0
        while True:
            arrived, params = self.diagnostics.get(timeout=120)
            if params["uri"] != uri:
                continue
            if params.get("version") == version:
                return arrived, params["diagnostics"], before
            before += 1

    def close(self) -> None:
        try:
            self.request("shutdown", None)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        except Exception:
            self.process.kill()


CAPABILITIES = {
    "textDocument": {
        "synchronization": {"didSave": True},
        "publishDiagnostics": {"relatedInformation": True, "versionSupport": True},
        "codeAction": {
            "codeActionLiteralSupport": {"codeActionKind": {"valueSet": ["quickfix", "source", "source.fixAll"]}},
            "resolveSupport": {"properties": ["edit"]},
            "dataSupport": True,
        },
        "hover": {"contentFormat": ["markdown", "plaintext"]},
    },
    "workspace": {"configuration": False},
}


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if needle in line)


def measure(label: str, command: list[str], env: dict, rounds: int, kind: str) -> dict[str, float]:
    workdir = tempfile.mkdtemp(prefix="ampfix-latency-")
    text = document(kind=kind)
    uri = "file://" + os.path.join(workdir, "train.py")
    client = Client(command, env, workdir)
    client.request("initialize", {"processId": os.getpid(), "rootUri": "file://" + workdir, "capabilities": CAPABILITIES})
    client.notify("initialized", {})
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": text}})
    client.diagnostics_of(uri, 1)
    version, edit_times, burst_times, burst_published = 1, [], [], []
    finding_times, clean_times, resolve_times, quick_resolve_times = [], [], [], []
    finding_line = line_of(text, "GradScaler()" if kind == "training" else "return model(x)")
    clean_line = line_of(text, "total -= value")
    # the cursor on the finding (the deprecated call), where its quick fix is offered
    finding_column = text.splitlines()[finding_line].find("torch.cuda") if kind == "training" else 0
    finding_column = max(finding_column, 0)

    def change(number: int) -> None:
        edited = text.replace("return total\n", f"return total  # {number}\n", 1)
        client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": number},
                                                 "contentChanges": [{"text": edited}]})

    def code_action(line: int, times: list, character: int = 0) -> list:
        where = {"start": {"line": line, "character": character}, "end": {"line": line, "character": character}}
        elapsed, actions = client.request("textDocument/codeAction", {
            "textDocument": {"uri": uri}, "range": where, "context": {"diagnostics": []}})
        times.append(elapsed)
        return actions or []

    for _ in range(rounds):
        version += 1
        start = time.perf_counter()
        change(version)
        arrived, _, _ = client.diagnostics_of(uri, version)
        edit_times.append(arrived - start)
        start = time.perf_counter()
        for _ in range(10):
            version += 1
            change(version)
        arrived, _, earlier = client.diagnostics_of(uri, version)
        burst_times.append(arrived - start)
        burst_published.append(earlier + 1)
        asked = time.perf_counter()
        actions = code_action(finding_line, finding_times, finding_column)
        code_action(clean_line, clean_times)
        quick = [a for a in actions if a.get("kind") == "quickfix" and "Disable" not in a.get("title", "")]
        if quick and "ampfix" in label:  # the time from the request to the edit an editor applies
            if not quick[0].get("edit"):
                client.request("codeAction/resolve", quick[0])
            quick_resolve_times.append(time.perf_counter() - asked)
        fix_all = [a for a in actions if "fixAll" in (a.get("kind") or "") and not a.get("edit")]
        if fix_all and "ampfix" in label:
            elapsed, resolved = client.request("codeAction/resolve", fix_all[0])
            assert resolved.get("edit"), resolved
            resolve_times.append(elapsed)
        time.sleep(0.2)  # an editor's pause between bursts
    client.close()
    shutil.rmtree(workdir, ignore_errors=True)
    figures = {
        "edit -> diagnostics": statistics.median(edit_times),
        "burst of 10 edits -> diagnostics": statistics.median(burst_times),
        "code action at a finding" if kind == "training" else "code action (no finding)": statistics.median(finding_times),
        "code action on a clean line": statistics.median(clean_times),
    }
    if quick_resolve_times:
        figures["quick fix: request -> judged edit"] = statistics.median(quick_resolve_times)
    if resolve_times:
        figures["codeAction/resolve of fix-all"] = statistics.median(resolve_times)
    print(f"{label}  ({kind} document, {rounds} rounds, {text.count(chr(10))} lines; versions published per burst: "
          f"median {statistics.median(burst_published):g}, max {max(burst_published)})")
    for name, value in figures.items():
        print(f"  {name:<36} {value * 1000:8.1f} ms")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=HERE, help="the ampfix checkout to run (PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ruff", action="store_true", help="measure `ruff server` too")
    parser.add_argument("--document", choices=["training", "light"], default="training")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.path.abspath(args.code)
    measure(f"ampfix server ({args.code})", [sys.executable, "-m", "ampfix", "server"], env, args.rounds, args.document)
    if args.ruff:
        ruff = shutil.which("ruff") or sys.exit("ruff is not installed: pip install ruff==0.17.6")
        measure("ruff server", [ruff, "server"], env, args.rounds, args.document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
