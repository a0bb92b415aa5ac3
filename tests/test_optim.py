"""Optimisation pieces: parameter groups with per-part learning rates, and the warm-up + cosine schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abr_lab.optim import parameter_groups, warmup_cosine


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))  # parts: "body" = 0, 1; "head" = 2


def part_of(name: str, _: nn.Parameter) -> str:
    return "head" if name.startswith("2.") else "body"


def test_each_part_gets_its_multiplier_and_only_matrices_decay() -> None:
    groups = parameter_groups(model(), part_of, ("body", "head"), lr=0.1, weight_decay=0.01, lr_multipliers={"head": 3})
    by_name = {g["name"]: g for g in groups}
    assert list(by_name) == ["body", "body/no_decay", "head", "head/no_decay"]
    assert [len(by_name[n]["params"]) for n in by_name] == [1, 3, 1, 1]  # body: W; b, LayerNorm w and b
    assert by_name["body"]["lr"] == 0.1 and by_name["head"]["lr"] == pytest.approx(0.3)
    assert by_name["body"]["weight_decay"] == 0.01 and by_name["head/no_decay"]["weight_decay"] == 0.0


def test_no_decay_parts_and_frozen_parameters() -> None:
    net = model()
    net[0].bias.requires_grad_(False)
    groups = parameter_groups(net, part_of, ("body", "head"), lr=1.0, weight_decay=0.1, no_decay=("head",))
    names = [g["name"] for g in groups]
    assert names == ["body", "body/no_decay", "head/no_decay"]
    assert sum(len(g["params"]) for g in groups) == 5  # the frozen bias is left out


def test_unknown_part_and_bad_multiplier_are_named() -> None:
    with pytest.raises(ValueError, match="unknown part 'neck'; known: body, head"):
        parameter_groups(model(), part_of, ("body", "head"), 1.0, 0.0, {"neck": 2.0})
    with pytest.raises(ValueError, match="lr_multipliers.head must be a finite number >= 0"):
        parameter_groups(model(), part_of, ("body", "head"), 1.0, 0.0, {"head": -1.0})


def test_groups_keep_their_ratio_under_the_schedule() -> None:
    groups = parameter_groups(
        model(), part_of, ("body", "head"), lr=1.0, weight_decay=0.0, lr_multipliers={"head": 0.5}
    )
    optimizer = torch.optim.SGD(groups, lr=1.0)
    schedule = warmup_cosine(optimizer, warmup_steps=2, total_steps=10)
    for _ in range(4):
        optimizer.step()
        schedule.step()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["head"] == pytest.approx(0.5 * lrs["body"]) and 0 < lrs["body"] < 1
