"""S4D: the closed-form kernel is the discretised system's impulse response, the layer convolves linearly, and its
recurrence (the streaming mode) gives the FFT convolution's output."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from abr_lab.layers.s4d import S4D, S4DKernel


def recurrence_impulse_response(kernel: S4DKernel, length: int) -> torch.Tensor:
    """Step the discretised system x_l = Ā x_(l-1) + B̄ u_l, y_l = 2 Re(C x_l) on a unit impulse: (H, L)."""
    A_bar, B_bar, C = kernel.discretised()
    x = torch.zeros_like(A_bar)
    out = []
    for step in range(length):
        x = A_bar * x + B_bar * (1.0 if step == 0 else 0.0)
        out.append(2.0 * (C * x).sum(-1).real)
    return torch.stack(out, dim=-1)


def test_s4d_lin_initialisation() -> None:
    kernel = S4DKernel(channels=8, state_size=16)
    A_bar, _, _ = kernel.discretised()
    assert torch.allclose(-torch.exp(kernel.log_A_real), torch.full((8, 8), -0.5))
    assert torch.allclose(kernel.A_imag[3], math.pi * torch.arange(8.0))
    dt = torch.exp(kernel.log_dt)
    assert dt.min() >= 1e-3 - 1e-9 and dt.max() <= 1e-1 + 1e-9
    assert (A_bar.abs() < 1).all()  # every mode decays
    assert {name for name, _ in kernel.named_parameters()} == {"log_dt", "log_A_real", "A_imag", "C"}


@pytest.mark.parametrize("length", [1, 50, 257])
def test_kernel_equals_the_step_by_step_recurrence(length: int) -> None:
    torch.manual_seed(0)
    kernel = S4DKernel(channels=4, state_size=32, dt_min=1e-2, dt_max=0.5).double()
    with torch.no_grad():
        kernel.A_imag.add_(torch.randn_like(kernel.A_imag))  # off the initial grid too
    expected = recurrence_impulse_response(kernel, length)
    assert kernel(length).shape == (4, length)
    torch.testing.assert_close(kernel(length), expected, rtol=0, atol=1e-8)


def direct_layer(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """The layer written as an explicit sum over lags (no FFT), float64."""
    length = u.shape[-1]
    k = layer.kernel(length)
    forward, backward = (k[: layer.channels], k[layer.channels :]) if layer.bidirectional else (k, None)
    y = torch.zeros_like(u)
    for t in range(length):
        for s in range(length):
            if s <= t:
                y[..., t] += forward[:, t - s] * u[..., s]
            elif backward is not None:
                y[..., t] += backward[:, s - t - 1] * u[..., s]
    y = F.gelu(y + u * layer.D.unsqueeze(-1))
    return layer.output(y)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_convolution_is_linear_not_circular(bidirectional: bool) -> None:
    torch.manual_seed(1)
    layer = S4D(channels=3, state_size=8, bidirectional=bidirectional, dt_min=0.05, dt_max=0.5).double().eval()
    u = torch.randn(2, 3, 24, dtype=torch.float64)
    torch.testing.assert_close(layer(u), direct_layer(layer, u), rtol=0, atol=1e-10)


def test_causal_unless_bidirectional() -> None:
    torch.manual_seed(2)
    u = torch.randn(1, 4, 64)
    bumped = u.clone()
    bumped[..., 40] += 1.0
    causal = S4D(channels=4, state_size=16).eval()
    torch.testing.assert_close(causal(u)[..., :40], causal(bumped)[..., :40], rtol=0, atol=1e-6)  # FFT rounding
    assert not torch.allclose(causal(u)[..., 40:], causal(bumped)[..., 40:])
    both = S4D(channels=4, state_size=16, bidirectional=True).eval()
    assert not torch.allclose(both(u)[..., :40], both(bumped)[..., :40], atol=1e-6)


@pytest.mark.parametrize("length", [1, 7, 300])
def test_shapes_and_gradients_reach_every_parameter(length: int) -> None:
    layer = S4D(channels=6, state_size=16, bidirectional=True, dropout=0.1)
    u = torch.randn(2, 6, length, requires_grad=True)
    y = layer(u)
    assert y.shape == (2, 6, length) and torch.isfinite(y).all()
    y.pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert u.grad is not None and u.grad.abs().sum() > 0
    assert {id(p) for p in layer.ssm_parameters()} == {
        id(layer.kernel.log_dt),
        id(layer.kernel.log_A_real),
        id(layer.kernel.A_imag),
    }


def causal_layer(dtype: torch.dtype = torch.float64) -> S4D:
    torch.manual_seed(3)
    layer = S4D(channels=4, state_size=16, dt_min=1e-2, dt_max=0.5).to(dtype).eval()
    with torch.no_grad():
        layer.kernel.A_imag.add_(torch.randn_like(layer.kernel.A_imag))  # off the initial grid too
    return layer


@pytest.mark.parametrize("length", [1, 33, 300])
def test_recurrence_equals_the_fft_convolution(length: int) -> None:
    layer = causal_layer()
    u = torch.randn(2, 4, length, dtype=torch.float64)
    y, state = layer.recurrent_forward(u)
    torch.testing.assert_close(y, layer(u), rtol=0, atol=1e-10)
    assert state.shape == (2, 4, 8) and state.dtype == torch.complex128


def test_recurrence_in_float32_stays_within_rounding_of_the_fft() -> None:
    """float32 at 2,048 steps: both paths round at ~6e-8 relative per operation, the FFT's error grows like
    log2(2L) (12 here) times the output's scale (|y| <= ~7) and the recurrence's with the modes' memory: measured
    <= 2e-6 over five inputs. 2e-5 leaves a tenfold margin; a wrong lag or a circular wrap-around is of order 1."""
    layer = causal_layer(torch.float32)
    u = torch.randn(2, 4, 2048)
    with torch.no_grad():
        y_fft, (y_rec, _) = layer.convolve(u), layer.scan(u)
    torch.testing.assert_close(y_rec, y_fft, rtol=0, atol=2e-5)


def test_recurrence_carries_its_state_across_chunks_and_single_steps() -> None:
    layer = causal_layer()
    u = torch.randn(2, 4, 60, dtype=torch.float64)
    a, state = layer.recurrent_forward(u[..., :25])
    b, state = layer.recurrent_forward(u[..., 25:57], state)
    steps = []
    for i in range(57, 60):
        y, state = layer.step(u[..., i], state)
        steps.append(y)
    assert steps[0].shape == (2, 4)
    torch.testing.assert_close(torch.cat([a, b, torch.stack(steps, -1)], -1), layer(u), rtol=0, atol=1e-10)


def test_bidirectional_layer_has_no_recurrence() -> None:
    layer = S4D(channels=2, state_size=4, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.recurrent_forward(torch.randn(1, 2, 5))
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(torch.randn(1, 2))


def test_bad_sizes_are_named() -> None:
    with pytest.raises(ValueError, match="state_size=7"):
        S4DKernel(channels=2, state_size=7)
    with pytest.raises(ValueError, match="dt_min"):
        S4DKernel(channels=2, dt_min=0.5, dt_max=0.1)


def test_s4d_runs_under_bf16_autocast() -> None:
    """Mixed precision (trainer=gpu is bf16-mixed): the FFT convolution stays in float32 and the output is finite."""
    torch.manual_seed(0)
    layer = S4D(4, state_size=8, bidirectional=True)
    u = torch.randn(2, 4, 64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = layer(u.bfloat16())
    assert y.shape == (2, 4, 64) and torch.isfinite(y.float()).all()
    assert torch.allclose(y.float(), layer(u), atol=0.1)


def test_kernel_from_bf16_parameters_is_computed_in_float32() -> None:
    """FSDP's bf16-mixed casts every parameter to bf16 (there is no complex bf16): the kernel is built in float32
    from the rounded parameters, and equals the float32 kernel of the same rounded values."""
    torch.manual_seed(0)
    kernel = S4DKernel(4, state_size=8)
    with torch.no_grad():  # the float32 copy holds exactly the bf16-rounded values
        for p in kernel.parameters():
            p.copy_(p.bfloat16().float())
    reference = kernel(256)
    k = kernel.bfloat16()(256)  # (H, L)
    assert k.dtype == torch.float32
    torch.testing.assert_close(k, reference)


def test_kernel_is_computed_without_complex_tensors() -> None:
    """Inductor generates no code for complex tensors (each complex op becomes its own library call): the kernel,
    which every training step recomputes, traces into one graph of real tensors only."""
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    kernel = S4DKernel(4, 8)
    torch._dynamo.reset()
    out = torch.compile(kernel, backend=backend, fullgraph=True)(50)
    torch._dynamo.reset()
    torch.testing.assert_close(out, kernel(50))
    values = [node.meta.get("example_value") for gm in graphs for node in gm.graph.nodes]
    dtypes = {v.dtype for v in values if isinstance(v, torch.Tensor)}
    assert len(graphs) == 1 and dtypes and not any(d.is_complex for d in dtypes), dtypes
