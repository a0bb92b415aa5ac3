"""Joint generation for the U-Net: a conditional diffusion objective on the signal path, a DDIM sampler, and a
learned prior over the static parameters (and the hearing-loss class).

The pieces, each small and tested on its own:

- `cosine_schedule`: α(t), σ(t) of the cosine schedule (Nichol & Dhariwal 2021) in continuous time t ∈ [0, 1],
  α² + σ² = 1, α(0) = 1 (clean), α(1) = 0 (pure noise);
- `TimestepEmbedding`: sinusoidal features of t through an MLP, added to the FiLM conditioning, so the noise level
  reaches every level of the U-Net (the origin never gave the network its timestep);
- `v_target` / `x0_and_eps`: v-prediction (Salimans & Ho 2022): the network predicts v = α ε − σ x0, from which both
  the clean signal and the noise follow; v stays well scaled at both ends of the schedule;
- `ddim_sample`: deterministic DDIM (η = 0) from pure noise at t = 1 down to t = 0, with classifier-free guidance
  (the origin's ran in the wrong direction and ignored the guidance scale);
- `JointPrior`: the class frequencies and, per class, a Gaussian mixture over the normalised static parameters,
  fitted on the train split and stored as buffers (a checkpoint alone generates); `sample` draws (class, static)
  with a temperature on the mixtures' spread, intensity on the clinical level grid, and optionally inside the
  train split's ranges.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from abr_lab.optimized_unet.datamodule import LOG_STATIC
from abr_lab.optimized_unet.schema import STATIC_NAMES

LOG_STATIC_INDEX = tuple(STATIC_NAMES.index(name) for name in LOG_STATIC)  # log1p before z-scoring, as the data
MAX_LEVELS = 32  # a static parameter with at most this many distinct values is a setting: samples snap to them
COSINE_OFFSET = 0.008  # Nichol & Dhariwal's s: keeps σ from being too small near t = 0


@dataclass(frozen=True)
class DiffusionConfig:
    """The `model.diffusion` block of the U-Net (None there = no generation).

    Args:
        weight: weight of the diffusion loss (MSE of v) next to the multi-task loss.
        p_uncond: probability that an example's static parameters (and class) are replaced by the learned null
            embeddings during training: what classifier-free guidance subtracts.
        class_conditioning: also condition on the hearing-loss class (to generate rare classes on demand).
        prior_components: Gaussian components per class of the static-parameter prior.
        sample_steps: DDIM steps of `generate_joint` unless given.
        guidance_scale: classifier-free guidance w (1 = conditional only, 0 = unconditional) unless given.
    """

    weight: float = 1.0
    p_uncond: float = 0.1
    class_conditioning: bool = True
    prior_components: int = 4
    sample_steps: int = 50
    guidance_scale: float = 1.5

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> DiffusionConfig | None:
        """None stays None; unknown keys are an error naming the key and the accepted ones."""
        if values is None:
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"model.diffusion.{unknown[0]}: unknown option; accepted: {', '.join(sorted(known))}")
        cfg = cls(**values)
        if not 0.0 <= cfg.p_uncond < 1.0:
            raise ValueError(f"model.diffusion.p_uncond={cfg.p_uncond}: need 0 <= p < 1")
        if cfg.weight < 0 or cfg.sample_steps < 1 or cfg.prior_components < 1:
            raise ValueError("model.diffusion: weight >= 0, sample_steps >= 1 and prior_components >= 1 required")
        return cfg


def cosine_schedule(t: Tensor) -> tuple[Tensor, Tensor]:
    """α(t), σ(t) of the cosine schedule for t ∈ [0, 1]: ᾱ(t) = f(t) / f(0), f(t) = cos²(π/2 · (t + s) / (1 + s))."""
    f0 = math.cos(math.pi / 2 * COSINE_OFFSET / (1 + COSINE_OFFSET))
    alpha = (torch.cos(math.pi / 2 * (t.clamp(0, 1) + COSINE_OFFSET) / (1 + COSINE_OFFSET)) / f0).clamp(0.0, 1.0)
    sigma = (1 - alpha.square()).clamp_min(0.0).sqrt()
    return alpha, sigma


def _expand(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against `like`."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = α(t) x0 + σ(t) ε."""
    alpha, sigma = cosine_schedule(t)
    return _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise


def v_target(x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """The v-prediction target v = α ε − σ x0."""
    alpha, sigma = cosine_schedule(t)
    return _expand(alpha, x0) * noise - _expand(sigma, x0) * x0


def x0_and_eps(x_t: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The clean signal and the noise implied by a v prediction: x0 = α x_t − σ v, ε = σ x_t + α v."""
    alpha, sigma = cosine_schedule(t)
    a, s = _expand(alpha, x_t), _expand(sigma, x_t)
    return a * x_t - s * v, s * x_t + a * v


class TimestepEmbedding(nn.Module):
    """t ∈ [0, 1] -> (B, dim): sinusoids of 1000·t at geometric frequencies, then an MLP."""

    def __init__(self, dim: int, features: int = 64) -> None:
        super().__init__()
        if features % 2:
            raise ValueError(f"features={features}: need an even number")
        half = features // 2
        self.register_buffer(
            "frequencies", torch.exp(-math.log(10_000.0) * torch.arange(half) / max(half - 1, 1)), persistent=False
        )
        self.mlp = nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        # t (B,)
        angles = 1000.0 * t.float().unsqueeze(-1) * self.frequencies  # (B, F/2)
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))  # (B, dim)


Denoiser = Callable[[Tensor, Tensor, bool], Tensor]


@torch.no_grad()
def ddim_sample(
    denoise: Denoiser,
    noise: Tensor,
    steps: int,
    guidance_scale: float = 1.0,
    trajectory: list[float] | None = None,
) -> Tensor:
    """Deterministic DDIM (η = 0) from `noise` (pure noise at t = 1) to t = 0 in `steps` equal steps.

    `denoise(x_t, t, conditional)` returns v; with guidance the prediction is v_u + w (v_c − v_u) (w = 1: the
    conditional prediction alone, no unconditional pass). Each step moves to the predicted x0 re-noised at the
    next, lower noise level; the last step (t = 0, σ = 0) returns the predicted clean signal. If `trajectory` is a
    list, σ(t) of every visited level is appended (1 → 0: the direction the origin got wrong).
    """
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1")
    x = noise
    times = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    b = noise.shape[0]
    for i in range(steps):
        t, t_next = times[i].expand(b), times[i + 1].expand(b)
        if trajectory is not None:
            trajectory.append(float(cosine_schedule(times[i])[1]))
        v = denoise(x, t, True)
        if guidance_scale != 1.0:
            v_uncond = denoise(x, t, False)
            v = v_uncond + guidance_scale * (v - v_uncond)
        x0, eps = x0_and_eps(x, t, v)
        alpha_next, sigma_next = cosine_schedule(t_next)
        x = _expand(alpha_next, x) * x0 + _expand(sigma_next, x) * eps
    if trajectory is not None:
        trajectory.append(float(cosine_schedule(times[-1])[1]))
    return x


class JointPrior(nn.Module):
    """p(class) · p(static | class): class frequencies and one Gaussian mixture per class over the normalised
    static parameters, fitted on the train split (`fit`), kept as buffers so that checkpoints carry them.

    Also stored: the data module's static normalisation (mean / std after log1p of age and Fmp), the train split's
    range of each raw parameter (the constraints) and the values of the settings (intensity levels, stimulus rates).
    """

    def __init__(self, num_classes: int, num_static: int = len(STATIC_NAMES), components: int = 4) -> None:
        super().__init__()
        c, k, d = num_classes, components, num_static
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("class_prob", torch.full((c,), 1.0 / c))
        self.register_buffer("weights", torch.full((c, k), 1.0 / k))  # per class, the mixture's weights
        self.register_buffer("means", torch.zeros(c, k, d))
        self.register_buffer("scale_tril", torch.eye(d).expand(c, k, d, d).clone())
        self.register_buffer("static_mean", torch.zeros(d))
        self.register_buffer("static_std", torch.ones(d))
        self.register_buffer("low", torch.full((d,), -math.inf))  # raw units
        self.register_buffer("high", torch.full((d,), math.inf))
        # per parameter, the values it takes in the train split when they are few (NaN-padded; all NaN: continuous)
        self.register_buffer("levels", torch.full((d, MAX_LEVELS), math.nan))

    @torch.no_grad()
    def fit(
        self,
        static_raw: np.ndarray,
        labels: np.ndarray,
        static_mean: np.ndarray,
        static_std: np.ndarray,
        seed: int = 0,
    ) -> None:
        """Fit on the train split's raw static parameters (N, 4) and labels (N,) with the data's normalisation."""
        from sklearn.mixture import GaussianMixture  # only when fitting: scikit-learn is slow to import

        c, k, d = self.means.shape
        self.static_mean.copy_(torch.as_tensor(static_mean, dtype=torch.float32))
        self.static_std.copy_(torch.as_tensor(static_std, dtype=torch.float32))
        raw = torch.as_tensor(np.asarray(static_raw), dtype=torch.float32)
        z = self.normalise(raw).double().numpy()
        counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=c)[:c].astype(np.float64)
        self.class_prob.copy_(torch.as_tensor(counts / max(counts.sum(), 1.0)))
        for cls in range(c):
            rows = z[np.asarray(labels) == cls]
            if len(rows) == 0:
                continue  # never sampled: its probability is 0, and asking for it is an error
            n_comp = min(k, len(rows))
            gmm = GaussianMixture(n_comp, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(rows)
            weights = np.zeros(k)
            weights[:n_comp] = gmm.weights_
            self.weights[cls] = torch.as_tensor(weights)
            self.means[cls, :n_comp] = torch.as_tensor(gmm.means_)
            self.scale_tril[cls, :n_comp] = torch.as_tensor(np.linalg.cholesky(gmm.covariances_))
        self.low.copy_(raw.min(0).values)
        self.high.copy_(raw.max(0).values)
        self.levels.fill_(math.nan)
        for j in range(d):
            values = torch.unique(raw[:, j])
            if len(values) <= self.levels.shape[1]:  # a clinical setting (intensity, rate), not a measurement
                self.levels[j, : len(values)] = values
        self.fitted.fill_(True)

    def normalise(self, raw: Tensor) -> Tensor:
        """Raw static parameters (..., 4) -> the network's normalised inputs."""
        x = raw.clone()
        for j in LOG_STATIC_INDEX:
            x[..., j] = torch.log1p(x[..., j].clamp_min(0.0))
        return (x - self.static_mean) / self.static_std

    def denormalise(self, z: Tensor) -> Tensor:
        """The inverse of `normalise`."""
        x = z * self.static_std + self.static_mean
        for j in LOG_STATIC_INDEX:
            x[..., j] = torch.expm1(x[..., j])
        return x

    def snap(self, raw: Tensor) -> Tensor:
        """Each setting (a parameter with few values in the train split: intensity levels, stimulus rates) moved to
        its nearest value; continuous parameters unchanged."""
        out = raw.clone()
        for j in range(raw.shape[-1]):
            levels = self.levels[j][~torch.isnan(self.levels[j])]
            if levels.numel():
                out[..., j] = levels[(raw[..., j].unsqueeze(-1) - levels).abs().argmin(-1)]
        return out

    def inside(self, raw: Tensor) -> Tensor:
        """(N,) whether every parameter lies within the train split's range."""
        return ((raw >= self.low) & (raw <= self.high)).all(-1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: Tensor | None = None,
        temperature: float = 1.0,
        use_constraints: bool = True,
        generator: torch.Generator | None = None,
        max_rounds: int = 20,
    ) -> tuple[Tensor, Tensor]:
        """Draw `n` (label, raw static) pairs: labels from the class frequencies unless given, static from that
        class's mixture with its spread scaled by `temperature`, settings (intensity, rate) on their values. With
        `use_constraints`, draws outside the train split's ranges are redrawn (up to `max_rounds` times) and the
        rest clipped into them."""
        if not bool(self.fitted):
            raise RuntimeError("the static prior is not fitted: it is fitted on the train split when training starts")
        device = self.means.device
        if labels is None:
            labels = torch.multinomial(self.class_prob, n, replacement=True, generator=generator)
        labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        if labels.numel() != n:
            raise ValueError(f"labels has {labels.numel()} entries for n={n}")
        bad = [int(c) for c in labels.unique() if c < 0 or c >= len(self.class_prob) or self.class_prob[c] == 0]
        if bad:
            raise ValueError(f"class {bad[0]} cannot be generated: it does not occur in the train split")
        raw = self._draw(labels, temperature, generator)
        for _ in range(max_rounds - 1 if use_constraints else 0):
            todo = (~self.inside(raw)).nonzero().squeeze(-1)  # draws outside the ranges: drawn again
            if todo.numel() == 0:
                break
            raw[todo] = self._draw(labels[todo], temperature, generator)
        if use_constraints:
            raw = torch.maximum(torch.minimum(raw, self.high), self.low)
        return labels, self.snap(raw)  # the train split's settings lie inside its ranges

    def _draw(self, labels: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
        """One unconstrained draw of raw static parameters for each label."""
        comp = torch.multinomial(self.weights[labels], 1, generator=generator).squeeze(-1)  # (n,)
        eps = torch.randn(labels.numel(), self.means.shape[-1], 1, device=labels.device, generator=generator)
        z = self.means[labels, comp] + temperature * (self.scale_tril[labels, comp] @ eps).squeeze(-1)  # (n, d)
        return self.denormalise(z)
