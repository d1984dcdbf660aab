"""The parameter digest: per-tensor norms and updates over a fixed sample of each tensor, gathered
once a step and reduced many steps at once. The batched figures must be the ones a direct
computation over the same samples gives, for every kind of parameter a model holds."""

import math

import pytest

torch = pytest.importorskip("torch")

from ampfix.verify import harness  # noqa: E402


def _model_parameters():
    big = torch.nn.Parameter(torch.randn(300, 128))  # sampled in runs (38,400 elements)
    long = torch.nn.Parameter(torch.randn(20_000))  # 1-D, sampled in runs
    small = torch.nn.Parameter(torch.randn(16, 32))  # 2-D but small: all of it
    bias = torch.nn.Parameter(torch.randn(7))
    transposed = torch.nn.Parameter(torch.randn(200, 64).t())  # not contiguous: all of it, flattened per step
    return [big, long, small, bias, transposed]


def _trace(params, lr=0.1):
    trace = harness.Trace({"mode": "original", "steps": 10})
    optimizer = torch.optim.SGD(params, lr=lr)
    trace.optimizers.append(optimizer)
    return trace, optimizer


def _train_step(params, optimizer):
    loss = sum((p.float() ** 2).sum() for p in params)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _direct(trace, params, starts):
    samples = [harness._sample(trace, p).float() for p in params]
    norms = [float(torch.linalg.vector_norm(s)) for s in samples]
    updates = [float(torch.linalg.vector_norm(s - st.float())) for s, st in zip(samples, starts)]
    return norms, updates


def test_batched_digest_equals_the_direct_norms_step_by_step():
    torch.manual_seed(0)
    params = _model_parameters()
    trace, optimizer = _trace(params)
    harness._remember_start(trace, torch, optimizer)
    starts = [trace.start_params[id(p)].clone() for p in params]
    expected, digests = [], []
    for _ in range(4):
        _train_step(params, optimizer)
        digests.append(harness.parameter_digest(trace))
        expected.append(_direct(trace, params, starts))
    assert trace.digest_batch is not None and len(trace.digest_batch.rows) == 4  # held, not reduced yet
    harness._reduce_digests(trace)
    for digest, (norms, updates) in zip(digests, expected):
        assert digest["count"] == len(params)
        assert digest["norm"] == pytest.approx(norms, rel=1e-5)
        assert digest["update"] == pytest.approx(updates, rel=1e-5, abs=1e-6)
    assert all(u > 0 for u in digests[-1]["update"])  # every tensor moved, each one seen


def test_a_tensor_without_w0_reports_no_update_and_a_new_w0_starts_a_new_batch():
    torch.manual_seed(1)
    params = _model_parameters()
    trace, optimizer = _trace(params)
    first = harness.parameter_digest(trace)  # no w_0 taken yet
    harness._remember_start(trace, torch, optimizer)  # w_0 now: the held step is reduced first
    _train_step(params, optimizer)
    second = harness.parameter_digest(trace)
    harness._reduce_digests(trace)
    assert first["update"] == [0.0] * len(params)
    assert all(u > 0 for u in second["update"])


def test_runs_cover_the_sample_inside_the_tensor_at_spread_columns():
    p = torch.randn(512, 256)
    runs, length, spacing = harness._runs_of(p)
    assert runs * length == harness.SAMPLE
    assert (runs - 1) * spacing + length <= p.numel()  # the last run stays inside
    assert math.gcd(spacing, p.shape[-1]) == 1  # the runs start at columns spread over a row
    columns = {(i * spacing) % p.shape[-1] for i in range(runs)}
    assert len(columns) == runs
    assert harness._runs_of(torch.randn(64, 64)) is None  # 4,096 elements: all of it
    assert harness._runs_of(torch.randn(300, 128).t()) is None  # not contiguous: all of it


def test_a_gradient_is_sampled_as_its_parameter():
    trace, _ = _trace([torch.nn.Parameter(torch.randn(300, 128))])
    p = trace.optimizers[0].param_groups[0]["params"][0]
    p.grad = torch.arange(p.numel(), dtype=torch.float32).view_as(p)
    view = harness._sample(trace, p)
    sampled = harness._sampled_gradient(p.grad, trace.sample_geometry[id(p)])
    assert torch.equal(sampled, p.grad.view(-1).as_strided(view.shape, view.stride()))
