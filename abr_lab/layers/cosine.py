"""One-class cosine head: two-class logits from the cosine between an embedding and one learnt target direction.

The head of OC-softmax (Zhang, Jiang & Duan, "One-class Learning Towards Synthetic Voice Spoofing Detection",
IEEE SPL 2021): instead of a linear layer that separates the training classes, one direction ``w`` stands for the
target class, and a clip's score is ``cos(x, w)``. Trained with a margin (`abr_lab.losses.margin_cross_entropy`),
the target class is pulled inside a tight cone (cos >= m_target) while everything else only has to stay outside a
wide one (cos <= m_other): an input unlike any training example of either class falls outside the target cone,
where a linear head may put it on whichever side its training classes happened to leave free.

The head returns logits (other, target) whose difference, the target log-odds, is ``scale · (cos − centre)``: the
same contract as a linear two-class head, so scores, argmax predictions and probabilities read the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OneClassCosineHead(nn.Module):
    """(b, d) embeddings -> (b, 2) logits ``(other, target)`` with target log-odds ``scale · (cos(x, w) − centre)``.

    Args:
        in_features: embedding width d.
        scale: α of OC-softmax (20 in the paper): the log-odds span ``scale · (±1 − centre)``.
        centre: the cosine at which both classes are equally likely, between the two margins of the loss (the
            paper's 0.9 and 0.2 give 0.55).
    """

    def __init__(self, in_features: int, scale: float = 20.0, centre: float = 0.55) -> None:
        super().__init__()
        if scale <= 0 or not -1.0 < centre < 1.0:
            raise ValueError(f"scale={scale}, centre={centre}: need scale > 0 and -1 < centre < 1")
        self.scale = float(scale)
        self.centre = float(centre)
        self.direction = nn.Parameter(torch.empty(in_features))
        nn.init.normal_(self.direction)

    def cosine(self, x: Tensor) -> Tensor:
        """(b, d) -> (b,) cosine between each embedding and the target direction."""
        return F.normalize(x, dim=-1) @ F.normalize(self.direction, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        log_odds = self.scale * (self.cosine(x) - self.centre)  # (b,)
        return torch.stack((-0.5 * log_odds, 0.5 * log_odds), dim=-1)  # (b, 2): their difference is the log-odds

    def extra_repr(self) -> str:
        return f"in_features={self.direction.numel()}, scale={self.scale}, centre={self.centre}"
