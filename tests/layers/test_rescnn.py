"""ResCNN block and stack: shapes, branch widths, receptive field, the residual path, gradients, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abr_lab.layers.rescnn import ResCNNBlock, ResCNNStack


def _zero_convs(block: ResCNNBlock, which: str) -> None:
    """Zero the branch convolutions' or the fusion convolution's weights: the block's non-skip path outputs 0."""
    convs = [b[0] for b in block.branches] if which == "branches" else [block.fusion[0]]
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()


def _measured_receptive_field(stack: ResCNNStack, length: int = 81) -> int:
    """Count the input positions with a non-zero gradient of the centre output position (summed over channels)."""
    torch.manual_seed(0)
    stack.eval()  # train-mode BatchNorm couples every position through the batch statistics
    x = torch.randn(1, stack.channels, length, requires_grad=True)
    centre = length // 2
    stack(x)[0, :, centre].sum().backward()
    hit = (x.grad[0].abs().sum(dim=0) > 0).nonzero().flatten()
    # The field is one contiguous window centred on the output position.
    assert hit.numel() == int(hit.max() - hit.min()) + 1
    assert int(hit.min() + hit.max()) == 2 * centre
    return hit.numel()


@pytest.mark.parametrize(
    ("channels", "widths"),
    [(512, (170, 170, 172)), (64, (21, 21, 22)), (3, (1, 1, 1))],
)
def test_branch_widths_split_the_channels_with_the_remainder_last(channels, widths):
    block = ResCNNBlock(channels)
    assert block.branch_widths == widths
    assert tuple(b[0].out_channels for b in block.branches) == widths
    assert tuple(b[0].kernel_size[0] for b in block.branches) == (3, 5, 7)


@pytest.mark.parametrize("length", [1, 7, 960])
@pytest.mark.parametrize("channels", [512, 64, 3])
@pytest.mark.parametrize("train", [True, False])
def test_shape_is_preserved(channels, length, train):
    torch.manual_seed(0)
    num_blocks = 1 if channels == 512 else 3  # the full-width block is the slow one
    stack = ResCNNStack(channels, num_blocks=num_blocks).train(train)
    x = torch.randn(2, channels, length)
    with torch.no_grad():
        y = stack(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert (y >= 0).all()  # every block ends in a ReLU


@pytest.mark.parametrize(
    ("num_blocks", "kernel_sizes", "expected"),
    [(3, (3, 5, 7), 19), (1, (3, 5, 7), 7), (4, (3,), 9), (2, (1, 5), 9), (2, (1,), 1)],
)
def test_receptive_field_matches_the_measured_one(num_blocks, kernel_sizes, expected):
    stack = ResCNNStack(8, num_blocks=num_blocks, kernel_sizes=kernel_sizes)
    assert stack.get_receptive_field() == expected
    assert _measured_receptive_field(stack) == expected


@pytest.mark.parametrize("which", ["branches", "fusion"])
@pytest.mark.parametrize("train", [True, False])
def test_with_the_conv_path_zeroed_the_block_is_relu_of_the_input(which, train):
    torch.manual_seed(0)
    block = ResCNNBlock(16, dropout=0.5).train(train)
    _zero_convs(block, which)
    x = torch.randn(4, 16, 33)
    torch.testing.assert_close(block(x), torch.relu(x), rtol=0, atol=0)
    positive = x.abs() + 0.1
    torch.testing.assert_close(block(positive), positive, rtol=0, atol=0)  # passes through unchanged


@pytest.mark.parametrize("train", [True, False])
def test_a_positive_input_passes_through_a_deep_stack_on_the_skip_alone(train):
    torch.manual_seed(0)
    stack = ResCNNStack(6, num_blocks=8).train(train)
    for block in stack.blocks:
        _zero_convs(block, "fusion")
    x = torch.rand(2, 6, 20) + 0.5
    torch.testing.assert_close(stack(x), x, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False])
def test_gradient_reaches_the_input_through_the_skip_when_the_branches_are_zero(train):
    torch.manual_seed(0)
    block = ResCNNBlock(12).train(train)
    _zero_convs(block, "branches")
    x = torch.randn(3, 12, 25, requires_grad=True)
    block(x).sum().backward()
    # d ReLU(x + 0) / dx = 1 where x > 0: all of it through the identity path.
    torch.testing.assert_close(x.grad, (x > 0).float(), rtol=0, atol=0)


def test_the_skip_adds_the_input_to_the_fused_branches():
    torch.manual_seed(0)
    block = ResCNNBlock(10).eval()
    x = torch.randn(2, 10, 30)
    with torch.no_grad():
        fused = block.fusion(torch.cat([b(x) for b in block.branches], dim=1))
        torch.testing.assert_close(block(x), torch.relu(fused + x))
        assert not torch.allclose(block(x), torch.relu(fused))  # the input does contribute


@pytest.mark.parametrize("train", [True, False])
def test_every_parameter_and_the_input_get_a_finite_nonzero_gradient(train):
    torch.manual_seed(0)
    stack = ResCNNStack(9, num_blocks=3).train(train)
    x = torch.randn(4, 9, 40, requires_grad=True)
    y = stack(x)
    # A weighted sum: with a plain sum the gradient w.r.t. BatchNorm's scale is ~0 in train mode.
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in stack.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_eval_mode_is_deterministic_and_train_mode_applies_dropout():
    torch.manual_seed(0)
    stack = ResCNNStack(16, num_blocks=2, dropout=0.5)
    x = torch.randn(2, 16, 50)
    with torch.no_grad():
        stack.eval()
        torch.testing.assert_close(stack(x), stack(x), rtol=0, atol=0)
        stack.train()
        assert not torch.equal(stack(x), stack(x))
    assert all(isinstance(b.fusion[2], nn.Dropout) and b.fusion[2].p == 0.5 for b in stack.blocks)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kernel_sizes"):
        ResCNNBlock(16, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="kernel_sizes"):
        ResCNNBlock(16, kernel_sizes=(0,))
    with pytest.raises(ValueError, match="kernel_sizes"):
        ResCNNBlock(16, kernel_sizes=())
    with pytest.raises(ValueError, match="channels"):
        ResCNNBlock(2, kernel_sizes=(3, 5, 7))
    with pytest.raises(ValueError, match="dropout"):
        ResCNNBlock(16, dropout=1.0)
    with pytest.raises(ValueError, match="num_blocks"):
        ResCNNStack(16, num_blocks=0)
    with pytest.raises(ValueError, match="kernel_sizes"):
        ResCNNStack(16, kernel_sizes=(2,))
