"""abr_lab.flops: the recurrent and CPU attention kernels count as the matrix products they run."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from abr_lab.flops import recurrent_flops


def counted(fn, *args) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def test_recurrent_flops_hand_computed() -> None:
    # 7 steps x 3 sequences, weights (8, 2) and (8, 2): 2 * 21 * (16 + 16); the bias (1-D) is not a product
    assert recurrent_flops((7, 3, 2), [(8, 2), (8, 2), (8,)]) == 2 * 21 * 32
    assert recurrent_flops((21, 2), [(8, 2), (8, 2)]) == 2 * 21 * 32  # packed: 21 (step, sequence) pairs


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # a notice of CPU builds when toggling oneDNN
def test_cpu_lstm_counted_as_its_decomposition() -> None:
    lstm = nn.LSTM(5, 16, num_layers=2, batch_first=True)
    x = torch.randn(3, 50, 5)
    by_hand = 2 * 3 * 50 * (64 * 5 + 64 * 16 + 64 * 16 + 64 * 16)
    assert counted(lstm, x) == by_hand  # the oneDNN layer kernel
    with torch.backends.mkldnn.flags(enabled=False):
        assert counted(lstm, x) == by_hand  # the same LSTM as PyTorch's own matrix products


def test_cudnn_formula_matches_the_gru_on_cpu() -> None:
    """cuDNN's kernel takes every layer's and direction's weights in one list: the formula on those shapes equals
    what the CPU's decomposition of the same GRU counts."""
    gru = nn.GRU(5, 16, num_layers=2, bidirectional=True)
    x = torch.randn(40, 3, 5)  # (t, b, in)
    formula = flop_registry[torch.ops.aten._cudnn_rnn]
    hx = torch.zeros(4, 3, 16)
    args = (x, list(gru._flat_weights), 4, None, hx, None, 3, 16, 0, 2, False, 0.0, False, True, [], None)
    assert formula(*args) == counted(gru, x) > 0


def test_cpu_attention_counted() -> None:
    b, h, s, d = 2, 4, 30, 8
    q = torch.randn(b, h, s, d)
    assert counted(nn.functional.scaled_dot_product_attention, q, q, q) == 2 * (2 * b * h * s * s * d)


def test_multi_head_attention_fast_path_counted_as_its_training_path() -> None:
    """In eval mode without gradients `nn.MultiheadAttention` runs one fused kernel (the model summary's case)."""
    attention = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(2, 7, 16)
    b, n, e = 2, 7, 16
    by_hand = 2 * b * n * e * (4 * e) + 2 * (2 * b * n * n * e)  # q, k, v, out projections; scores and values
    attention.train()
    assert counted(lambda q: attention(q, q, q, need_weights=False), x) == by_hand
    attention.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        attention(x, x, x, need_weights=False)
    assert list(counter.get_flop_counts()["Global"]) == [torch.ops.aten._native_multi_head_attention]
    assert counter.get_total_flops() == by_hand


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_recurrent_backward_counted_as_its_decomposition() -> None:
    """A training pass through an LSTM: oneDNN's fused backward counts twice its forward, what autograd's matrix
    products count but for the zero initial state's gradient, which the fused kernel computes and autograd skips."""
    lstm = nn.LSTM(5, 16, num_layers=2)
    x = torch.randn(50, 3, 5, requires_grad=True)

    def train_pass() -> int:
        with FlopCounterMode(display=False) as counter:
            lstm(x)[0].sum().backward()
        return counter.get_total_flops()

    forward = 2 * 3 * 50 * (64 * 5 + 64 * 16 + 64 * 16 + 64 * 16)
    assert train_pass() == 3 * forward
    initial_state_gradients = 2 * (2 * 3 * 64 * 16)  # per layer: (b, h) @ (h, 4h) at the first step
    with torch.backends.mkldnn.flags(enabled=False):
        assert train_pass() == 3 * forward - initial_state_gradients
    formula = flop_registry[torch.ops.aten._cudnn_rnn_backward]
    assert formula(x, list(lstm._flat_weights), 4, None) == 2 * forward
