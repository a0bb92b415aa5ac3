"""LSTMExtractor and its step-by-step processor; the truncated-BPTT chunk's gradient path."""

from __future__ import annotations

import pytest
import torch

from abr_lab.lstm_extractor import LSTMExtractor, LSTMExtractorModule, StatefulExtractor, network
from abr_lab.lstm_extractor.network import build_inputs, detach_state
from abr_lab.registry import create_model, list_models


@pytest.mark.parametrize("name", list_models("lstm_extractor"))
def test_registered_variants_give_one_value_per_step(name):
    net = create_model(name)
    y, (h, c) = net(torch.randn(3, 20, 5))
    assert y.shape == (3, 20) and torch.isfinite(y).all()
    assert h.shape == c.shape == (net.num_layers, 3, net.hidden_size)
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="hidden_size"):
        LSTMExtractor(hidden_size=0)
    with pytest.raises(ValueError, match="unknown model variant 'nope'"):
        create_model("nope")


def test_build_inputs_puts_condition_at_every_step():
    mixture, cond = torch.randn(2, 7), torch.eye(4)[[1, 3]]
    x = build_inputs(mixture, cond)
    assert x.shape == (2, 7, 5)
    torch.testing.assert_close(x[..., 0], mixture)
    torch.testing.assert_close(x[:, 4, 1:], cond)


def test_stateful_steps_equal_the_full_sequence():
    torch.manual_seed(0)
    net = LSTMExtractor().eval()
    mixture, cond = torch.randn(4, 300), torch.eye(4)
    with torch.no_grad():
        full, _ = net(build_inputs(mixture, cond))
    stepped = StatefulExtractor(net).run(mixture, cond)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=0)


def test_chunked_state_carry_equals_one_pass():
    net = LSTMExtractor().eval()
    x = torch.randn(2, 100, 5)
    with torch.no_grad():
        full, _ = net(x)
        a, state = net(x[:, :40])
        b, _ = net(x[:, 40:], state)
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=1e-6, rtol=0)


def test_gradient_reaches_first_step_of_a_chunk_but_not_the_previous_chunk():
    module = LSTMExtractorModule(arch="lstm_extractor_tiny", freqs=(1.0, 3.0, 5.0, 7.0))
    x = torch.randn(2, 60, 5, requires_grad=True)
    target = torch.randn(2, 60)
    _, state = module.net(x[:, :30])
    state = detach_state(state)  # what training_step does between chunks
    loss, _ = module.chunk_loss(x[:, 30:], target[:, 30:], state)
    loss.backward()
    grad = x.grad.abs().sum(-1)  # (b, t)
    assert (grad[:, 30] > 0).all(), "no gradient through time to the chunk's first step"
    assert (grad[:, :30] == 0).all(), "gradient leaked into the previous chunk"


def test_chrono_init_spreads_forget_gate_time_constants():
    torch.manual_seed(0)
    net = LSTMExtractor(hidden_size=256, chrono_max_steps=1000)
    h = net.hidden_size
    for layer in range(net.num_layers):
        bias = getattr(net.lstm, f"bias_ih_l{layer}") + getattr(net.lstm, f"bias_hh_l{layer}")
        forget, inp = bias[h : 2 * h], bias[:h]
        assert forget.min() >= 0 and forget.max() <= torch.log(torch.tensor(999.0))
        assert forget.max() > torch.log(torch.tensor(500.0))  # long memories are there
        torch.testing.assert_close(inp, -forget)
    with pytest.raises(ValueError, match="chrono_max_steps"):
        LSTMExtractor(chrono_max_steps=2)


@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_cpu_inference_equals_one_pass(monkeypatch, with_state):
    net = LSTMExtractor(hidden_size=8, num_layers=2).eval()
    x = torch.randn(3, 50, 5)
    state = (torch.randn(2, 3, 8), torch.randn(2, 3, 8)) if with_state else None
    monkeypatch.setattr(network, "CPU_CHUNK_BYTES", 3 * 4 * 8 * 4 * 7)  # 7 steps per chunk: 8 chunks, the last short
    assert network.cpu_chunk_steps(3, 8) == 7
    with torch.no_grad():
        chunked, chunked_state = net(x, state)
        whole, whole_state = net._forward_once(x, state)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(chunked_state, whole_state)
