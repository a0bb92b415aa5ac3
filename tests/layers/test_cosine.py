"""One-class cosine head: its log-odds are scale · (cos − centre), whatever the embedding's length."""

from __future__ import annotations

import pytest
import torch

from abr_lab.layers.cosine import OneClassCosineHead


def test_log_odds_are_the_scaled_cosine_to_the_direction() -> None:
    head = OneClassCosineHead(2, scale=20.0, centre=0.55)
    with torch.no_grad():
        head.direction.copy_(torch.tensor([3.0, 0.0]))  # its length does not matter
    x = torch.tensor([[5.0, 0.0], [1.0, 1.0], [0.0, -2.0]])  # cos 1, 1/√2, 0
    logits = head(x)
    assert logits.shape == (3, 2)
    cos = torch.tensor([1.0, 2**-0.5, 0.0])
    torch.testing.assert_close(logits[:, 1] - logits[:, 0], 20.0 * (cos - 0.55))
    torch.testing.assert_close(logits.sum(dim=1), torch.zeros(3))  # symmetric: the softmax is sigmoid(log-odds)


def test_only_the_embedding_direction_counts_and_the_direction_learns() -> None:
    torch.manual_seed(0)
    head = OneClassCosineHead(8)
    x = torch.randn(5, 8)
    (head(x)[:, 1] - head(x)[:, 0]).sum().backward()
    assert head.direction.grad is not None and head.direction.grad.abs().sum() > 0
    torch.testing.assert_close(head(x * 7.0), head(x))  # only the direction of the embedding counts


@pytest.mark.parametrize(("scale", "centre"), [(0.0, 0.5), (20.0, 1.0), (20.0, -1.5)])
def test_refuses_a_meaningless_scale_or_centre(scale: float, centre: float) -> None:
    with pytest.raises(ValueError, match="scale="):
        OneClassCosineHead(4, scale=scale, centre=centre)
