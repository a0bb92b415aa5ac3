"""FiLM: feature-wise linear modulation of a feature map by a conditioning vector (Perez et al., 2018)."""

from __future__ import annotations

from torch import Tensor, nn


class FiLM(nn.Module):
    """x · (1 + γ(c)) + β(c) per channel, with γ, β linear in the condition c.

    The projection starts at zero, so a freshly built FiLM is the identity and conditioning is learned rather than
    imposed at initialisation.
    """

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        # x (B, C, L), cond (B, D)
        gamma, beta = self.proj(cond).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1) each
        return x * (1.0 + gamma) + beta  # (B, C, L)
