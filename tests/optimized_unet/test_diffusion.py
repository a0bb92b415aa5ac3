"""Joint generation: the schedule, the timestep and null embeddings, DDIM's direction, the static prior's
constraints, and a tiny network that learns one waveform shape and generates it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abr_lab.layers import FiLM
from abr_lab.optimized_unet.diffusion import (
    DiffusionConfig,
    JointPrior,
    add_noise,
    cosine_schedule,
    ddim_sample,
    v_target,
    x0_and_eps,
)
from abr_lab.optimized_unet.module import OptimizedUNetModule
from abr_lab.registry import create_model

LOSS = {
    "weights": {
        "signal": 1.0,
        "spectral": 0.0,
        "presence": 1.0,
        "latency": 1.0,
        "amplitude": 1.0,
        "class": 1.0,
        "threshold": 1.0,
    }
}


def tiny_net(length: int = 64, **kwargs: object) -> torch.nn.Module:
    return create_model("optimized_unet_tiny", signal_length=length, generative=True, dropout=0.0, **kwargs)


def test_cosine_schedule_ends_and_unit_variance() -> None:
    t = torch.linspace(0, 1, 101)
    alpha, sigma = cosine_schedule(t)
    assert alpha[0] == pytest.approx(1.0) and sigma[0] == pytest.approx(0.0, abs=1e-6)
    assert alpha[-1] == pytest.approx(0.0, abs=1e-6) and sigma[-1] == pytest.approx(1.0)
    torch.testing.assert_close(alpha.square() + sigma.square(), torch.ones(101))
    assert (alpha.diff() <= 0).all() and (sigma.diff() >= 0).all()


def test_v_prediction_inverts_exactly() -> None:
    x0, noise, t = torch.randn(5, 1, 30), torch.randn(5, 1, 30), torch.rand(5)
    x_t = add_noise(x0, t, noise)
    x0_hat, eps_hat = x0_and_eps(x_t, t, v_target(x0, t, noise))
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_hat, noise, atol=1e-5, rtol=1e-5)


def trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """FiLM projections start at zero (conditioning is learned); give them the random weights training would."""
    for module in net.modules():
        if isinstance(module, FiLM):
            torch.nn.init.normal_(module.proj.weight, std=0.1)
    return net.eval()


def test_timestep_reaches_every_level_and_changes_the_output() -> None:
    torch.manual_seed(0)
    net = trained_like(tiny_net())
    films = [m for m in net.modules() if isinstance(m, FiLM)]
    conds: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(films))}
    for i, film in enumerate(films):
        film.register_forward_hook(lambda mod, args, out, i=i: conds[i].append(args[1]))
    x, static = torch.randn(2, 1, 64), torch.randn(2, 4)
    with torch.no_grad():
        a = net.denoise(x, static, torch.full((2,), 0.1))
        b = net.denoise(x, static, torch.full((2,), 0.9))
    assert len(films) == 2 * len(net.encoder) + 1  # every encoder level, the bottleneck, every decoder level
    for i in conds:
        assert (conds[i][0] - conds[i][1]).abs().max() > 1e-4, f"FiLM {i} does not see the timestep"
    assert (a - b).abs().max() > 1e-4


def test_null_embedding_replaces_the_parameters() -> None:
    torch.manual_seed(0)
    net = trained_like(tiny_net(class_conditioning=True))
    x, t = torch.randn(2, 1, 64), torch.full((2,), 0.5)
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        a = net.denoise(x, torch.randn(2, 4), t, torch.tensor([0, 1]), drop)
        b = net.denoise(x, torch.randn(2, 4), t, torch.tensor([3, 4]), drop)  # other parameters, other classes
        c = net.denoise(x, torch.randn(2, 4), t, torch.tensor([3, 4]))
    torch.testing.assert_close(a, b)  # dropped: neither the parameters nor the class matter
    assert (a - c).abs().max() > 1e-5


def test_null_embedding_is_used_at_the_configured_rate() -> None:
    module = OptimizedUNetModule(
        arch="optimized_unet_tiny", signal_length=64, loss=LOSS, diffusion={"p_uncond": 0.3, "prior_components": 1}
    )
    seen: list[torch.Tensor] = []

    def record(x_t, static, t, label=None, drop=None):  # noqa: ANN001, ANN202
        seen.append(drop)
        return torch.zeros_like(x_t)

    module.net.denoise = record
    batch = {"clean": torch.randn(500, 1, 64), "static": torch.randn(500, 4), "label": torch.zeros(500).long()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        module.diffusion_loss(batch, generator=generator)
    rate = torch.cat(seen).float().mean().item()
    assert rate == pytest.approx(0.3, abs=0.015)  # 20,000 draws: the binomial sd is 0.003


@pytest.mark.parametrize("steps", [1, 25])
def test_ddim_runs_from_noise_to_clean(steps: int) -> None:
    target = torch.sin(torch.linspace(0, 6, 40)).expand(3, 1, 40)

    def oracle(x_t: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
        alpha, sigma = cosine_schedule(t)
        a, s = alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
        eps = (x_t - a * target) / s.clamp_min(1e-8)
        return a * eps - s * target  # the exact v of a model that knows the data is `target`

    trajectory: list[float] = []
    out = ddim_sample(oracle, torch.randn(3, 1, 40), steps, trajectory=trajectory)
    assert trajectory[0] == pytest.approx(1.0) and trajectory[-1] == pytest.approx(0.0, abs=1e-6)
    assert len(trajectory) == steps + 1 and all(b < a for a, b in zip(trajectory, trajectory[1:], strict=False))
    torch.testing.assert_close(out, target, atol=1e-4, rtol=1e-4)


def test_guidance_extrapolates_from_the_unconditional_prediction() -> None:
    calls: list[bool] = []

    def denoise(x_t: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
        calls.append(conditional)
        return torch.full_like(x_t, 1.0 if conditional else 0.0)

    ddim_sample(denoise, torch.zeros(1, 1, 4), steps=1, guidance_scale=3.0)
    assert calls == [True, False]
    calls.clear()
    ddim_sample(denoise, torch.zeros(1, 1, 4), steps=2, guidance_scale=1.0)
    assert calls == [True, True]  # w = 1: the conditional prediction alone, no unconditional pass


def fitted_prior() -> JointPrior:
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.choice(3, size=n, p=[0.7, 0.3, 0.0])
    static = np.stack(
        [
            rng.uniform(0.1, 70, n),  # age
            rng.choice(np.arange(20, 101, 10), n),  # intensity levels
            rng.choice([11.1, 21.1, 49.1], n),  # rate settings
            rng.lognormal(1.0, 0.5, n),  # Fmp
        ],
        axis=1,
    )
    prior = JointPrior(num_classes=3, components=2)
    prior.fit(static, labels, static_mean=np.zeros(4), static_std=np.ones(4))
    return prior


def test_prior_respects_settings_ranges_and_classes() -> None:
    prior = fitted_prior()
    labels, raw = prior.sample(2000, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert prior.inside(raw).all()  # use_constraints: inside the train split's ranges
    assert set(raw[:, 1].unique().tolist()) <= set(range(20, 101, 10))  # intensity on the clinical levels
    assert set(np.round(raw[:, 2].unique().double().numpy(), 3).tolist()) <= {
        11.1,
        21.1,
        49.1,
    }  # stimulus-rate settings
    assert 2 not in labels.tolist()  # absent from the train split: never drawn
    assert (labels == 1).float().mean().item() == pytest.approx(0.3, abs=0.05)
    with pytest.raises(ValueError, match="class 2 cannot be generated"):
        prior.sample(3, labels=torch.tensor([2, 2, 2]))


def test_prior_temperature_scales_the_spread() -> None:
    prior = fitted_prior()
    g = torch.Generator().manual_seed(1)
    _, cold = prior.sample(2000, labels=torch.zeros(2000).long(), temperature=0.2, use_constraints=False, generator=g)
    _, warm = prior.sample(2000, labels=torch.zeros(2000).long(), temperature=1.0, use_constraints=False, generator=g)
    assert cold[:, 0].std() < 0.5 * warm[:, 0].std()


def test_unfitted_prior_and_bad_config_are_refused() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        JointPrior(num_classes=2).sample(1)
    with pytest.raises(ValueError, match="model.diffusion.colour"):
        DiffusionConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="p_uncond"):
        DiffusionConfig.from_dict({"p_uncond": 1.0})
    with pytest.raises(RuntimeError, match="without generation"):
        OptimizedUNetModule(arch="optimized_unet_tiny", signal_length=64, loss=LOSS).generate_joint(2)


def test_tiny_model_generates_the_single_shape_it_saw() -> None:
    torch.manual_seed(0)
    length = 64
    axis = torch.linspace(0, 1, length)
    shape = torch.exp(-(((axis - 0.4) / 0.05) ** 2)) - 0.6 * torch.exp(-(((axis - 0.6) / 0.08) ** 2))
    shape = (shape - shape.mean()) / shape.std()
    net = tiny_net(length)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        x0, t, noise = shape.expand(16, 1, length), torch.rand(16), torch.randn(16, 1, length)
        v = net.denoise(add_noise(x0, t, noise), torch.randn(16, 4), t)
        loss = (v - v_target(x0, t, noise)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    static = torch.randn(8, 4)
    out = ddim_sample(lambda x, t, c: net.denoise(x, static, t), torch.randn(8, 1, length), steps=20).squeeze(1)
    corr = torch.nn.functional.cosine_similarity(out - out.mean(-1, keepdim=True), shape.expand(8, -1), dim=-1)
    assert corr.min() > 0.9, corr
    assert out.std(-1).mean() == pytest.approx(1.0, abs=0.2)
