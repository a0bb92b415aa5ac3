"""Feature pyramid: one width at every backbone stride, the top-down pathway reaching the finest level, odd sizes."""

from __future__ import annotations

import pytest
import timm
import torch

from abr_lab.layers import FeaturePyramid


@pytest.mark.parametrize("backbone", ["resnet18", "test_efficientnet"])
def test_output_shapes_keep_every_backbone_stride(backbone: str) -> None:
    encoder = timm.create_model(backbone, pretrained=False, features_only=True).eval()
    channels, strides = encoder.feature_info.channels(), encoder.feature_info.reduction()
    fpn = FeaturePyramid(channels, 24)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = encoder(x)
        outputs = fpn(features)
    assert len(outputs) == len(features) == len(strides)
    for out, stride in zip(outputs, strides, strict=True):
        assert out.shape == (2, 24, 64 // stride, 96 // stride)
        assert torch.isfinite(out).all()


def test_odd_sizes_are_upsampled_to_the_finer_level_exactly() -> None:
    fpn = FeaturePyramid([4, 8, 16], 6)
    features = [torch.randn(1, 4, 9, 13), torch.randn(1, 8, 5, 7), torch.randn(1, 16, 3, 4)]
    outputs = fpn(features)
    assert [tuple(o.shape) for o in outputs] == [(1, 6, 9, 13), (1, 6, 5, 7), (1, 6, 3, 4)]


def test_top_down_pathway_carries_coarse_to_fine_only() -> None:
    fpn = FeaturePyramid([4, 8, 16], 6)
    features = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        base = fpn(features)
        coarse_changed = fpn([features[0], features[1], features[2] + 1.0])
        fine_changed = fpn([features[0] + 1.0, features[1], features[2]])
    assert not torch.allclose(coarse_changed[0], base[0])  # the coarsest level reaches the finest output
    torch.testing.assert_close(fine_changed[2], base[2])  # nothing flows bottom-up


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="in_channels"):
        FeaturePyramid([], 8)
    with pytest.raises(ValueError, match="out_channels"):
        FeaturePyramid([4], 0)
    with pytest.raises(ValueError, match="expects 2 maps"):
        FeaturePyramid([4, 8], 6)([torch.randn(1, 4, 8, 8)])
