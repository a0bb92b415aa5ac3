"""S4D: the diagonal structured state-space layer of Gu, Gupta, Goel and Ré (2022), "On the Parameterization and
Initialization of Diagonal State Space Models".

Each of H channels is a linear time-invariant system with N/2 complex diagonal modes,

    x'(t) = A x(t) + B u(t),    y(t) = 2 Re(C x(t)),    A = -exp(log_A_real) + i A_imag,

discretised with a zero-order hold of step Δ = exp(log_dt): Ā = exp(ΔA), B̄ = (exp(ΔA) - 1) / A · B. The layer's
output is the convolution of its input with the kernel K[l] = 2 Re Σₙ Cₙ B̄ₙ Āₙ^l, computed in closed form for any
length L and applied by FFT (zero-padded to 2L, so the convolution is linear, not circular). B is fixed to ones:
its scale is absorbed into the trainable complex C, as in the reference.

Initialisation S4D-Lin: A = -1/2 + iπn, log Δ uniform in [log 1e-3, log 1e-1] per channel, C complex normal.
The real part of A makes every mode decay; the imaginary part makes the modes oscillate at frequencies that grow
with n — the origin project kept only a sum of real exponentials, which cannot represent oscillations at all.

ABR analysis is offline, so the layer can be bidirectional: a second kernel runs over the reversed sequence and
the two are summed into one non-causal convolution.

A causal layer also runs as its recurrence (`recurrent_forward`, `step`), carrying the state x (B, H, N/2) from
one step to the next: streaming inference, sample by sample or chunk by chunk. It costs O(N) per step and
channel against the FFT's O(log L), but takes L sequential steps where the FFT makes a few whole-sequence passes
(`python scripts/benchmark.py s4d` times both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class S4DKernel(nn.Module):
    """The S4D convolution kernel of `channels` independent systems with `state_size` // 2 complex modes each.

    `forward(L)` returns the kernel (channels, L). Parameters carry the reference's names: `log_dt` (H,),
    `log_A_real` (H, N/2), `A_imag` (H, N/2) and `C` (H, N/2, 2) (complex, stored as real and imaginary parts).
    """

    def __init__(self, channels: int, state_size: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        if channels < 1 or state_size < 2 or state_size % 2:
            raise ValueError(f"channels={channels}, state_size={state_size}: need channels >= 1, an even state >= 2")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min={dt_min}, dt_max={dt_max}: need 0 < dt_min <= dt_max")
        modes = state_size // 2
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # (H,)
        self.log_A_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))  # (H, N/2): Re A = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1))  # πn
        self.C = nn.Parameter(torch.view_as_real(torch.randn(channels, modes, dtype=torch.cfloat)))  # (H, N/2, 2)

    def continuous(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Δ (H, 1), Re A, Im A (H, N/2) and C's real and imaginary parts (H, N/2), as real tensors in at least
        float32 whatever the parameters are stored in: mixed precision that casts them (FSDP's bf16 parameters)
        would otherwise find no complex bf16 type, and Ā^l for l in the thousands needs the mantissa."""
        log_dt, log_A_real, A_imag, C = (
            p.to(torch.promote_types(p.dtype, torch.float32))
            for p in (self.log_dt, self.log_A_real, self.A_imag, self.C)
        )
        return torch.exp(log_dt).unsqueeze(-1), -torch.exp(log_A_real), A_imag, C[..., 0], C[..., 1]

    def discretised(self) -> tuple[Tensor, Tensor, Tensor]:
        """Ā (H, N/2), B̄ (H, N/2) and C (H, N/2), complex: the zero-order-hold system the recurrence steps."""
        dt, a, w, c_re, c_im = self.continuous()
        A = torch.complex(a, w)  # (H, N/2)
        A_bar = torch.exp(dt * A)
        B_bar = (A_bar - 1.0) / A  # B = 1
        return A_bar, B_bar, torch.complex(c_re, c_im)

    def forward(self, length: int) -> Tensor:
        """The kernel (H, L), in real arithmetic: `torch.compile`'s Inductor generates no code for complex tensors and
        runs each complex op as its own library call (the default U-Net's compiled training step scheduled 1,372
        such calls with a complex kernel, 336 with this one); as exponentials, cosines and sines it fuses them. On a
        CPU this kernel is also 1.6-3x faster (forward and backward, L = 150 .. 16,384) and as accurate."""
        dt, a, w, c_re, c_im = self.continuous()
        decay, turn = a * dt, w * dt  # (H, N/2): Ā = exp(decay + i turn)
        # B̄ = (Ā - 1) / A with A = a + i w; then C B̄, both as (real, imaginary) pairs
        x, y = torch.exp(decay) * torch.cos(turn) - 1.0, torch.exp(decay) * torch.sin(turn)  # Ā - 1
        norm = a * a + w * w  # |A|^2
        b_re, b_im = (x * a + y * w) / norm, (y * a - x * w) / norm  # (H, N/2)
        cb_re, cb_im = c_re * b_re - c_im * b_im, c_re * b_im + c_im * b_re  # (H, N/2)
        # Ā^l in blocks: l = i·b + j with b ≈ √L, Ā^l = Ā^(i·b) Ā^j, and the sum over modes is one batched product,
        # (H, L/b, N) @ (H, N, b), instead of H·N/2·L exponentials (~40x faster at L = 16,384, no (H, N/2, L) tensor)
        block = math.isqrt(length - 1) + 1  # b >= √L
        blocks = -(-length // block)  # L/b rounded up
        steps = torch.arange(max(block, blocks), device=dt.device, dtype=dt.dtype)
        j, i = steps[:block], steps[:blocks] * block  # (b,), (L/b,)
        decay, turn = decay.unsqueeze(-1), turn.unsqueeze(-1)  # (H, N/2, 1)
        power = torch.exp(decay * j)  # (H, N/2, b): |Ā^j|
        within = torch.cat([power * torch.cos(turn * j), power * torch.sin(turn * j)], dim=1)  # (H, N, b): Re, Im
        start = torch.exp(decay * i)  # (H, N/2, L/b): |Ā^(i·b)|, then its real and imaginary parts
        p_re, p_im = start * torch.cos(turn * i), start * torch.sin(turn * i)
        cb_re, cb_im = cb_re.unsqueeze(-1), cb_im.unsqueeze(-1)  # (H, N/2, 1)
        # Re(s · Ā^j) = Re s Re Ā^j - Im s Im Ā^j for s = C B̄ Ā^(i·b): the rows of `starts` pair with `within`'s
        starts = torch.cat([cb_re * p_re - cb_im * p_im, -(cb_re * p_im + cb_im * p_re)], dim=1)  # (H, N, L/b)
        k = torch.bmm(starts.transpose(1, 2), within).flatten(1)[:, :length]  # (H, L): index i·b + j
        return 2.0 * k  # (H, L)

    def ssm_parameters(self) -> list[nn.Parameter]:
        """The parameters of A and Δ, which the reference trains with a smaller learning rate and no weight decay."""
        return [self.log_dt, self.log_A_real, self.A_imag]


class S4D(nn.Module):
    """An S4D layer on (B, H, L) sequences: state-space convolution + D skip, GELU, dropout, GLU projection.

    Args:
        channels: H, the model width (each channel is its own state-space system).
        state_size: N, twice the number of complex modes per channel.
        bidirectional: add a second kernel running backwards in time (a non-causal layer, for offline analysis).
        dropout: after the activation.
        dt_min, dt_max: the range of the initial step sizes Δ (log-uniform).
    """

    def __init__(
        self,
        channels: int,
        state_size: int = 64,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
    ) -> None:
        super().__init__()
        self.channels, self.bidirectional = channels, bidirectional
        self.kernel = S4DKernel(channels * (2 if bidirectional else 1), state_size, dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(channels))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Sequential(nn.Conv1d(channels, 2 * channels, kernel_size=1), nn.GLU(dim=1))

    def convolution_kernel(self, length: int) -> Tensor:
        """The kernel over lags -(L-1) .. L-1 laid out for a circular FFT of size 2L: (H, 2L)."""
        k = self.kernel(length)  # (H or 2H, L)
        if not self.bidirectional:
            return F.pad(k, (0, length))  # (H, 2L): lags 0 .. L-1, then zeros
        forward, backward = k[: self.channels], k[self.channels :]  # (H, L) each
        # the backward kernel's lag -j (j >= 1) sits at index 2L - j of the circular layout
        return F.pad(forward, (0, length)) + F.pad(backward.flip(-1), (length, 0))  # (H, 2L)

    def forward(self, u: Tensor) -> Tensor:
        return self.mix(self.convolve(u))  # (B, H, L)

    def recurrent_forward(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The causal layer one step at a time: u (B, H, L), state -> y (B, H, L), the state after the last step.

        Gives `forward`'s output (up to rounding) and carries the state across calls, so a signal can be fed in
        chunks of any length, down to `step`'s one sample. `state` is None (zeros: a new signal) or the one a
        previous call returned.
        """
        y, state = self.scan(u, state)  # (B, H, L), (B, H, N/2)
        return self.mix(y), state

    def step(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step of a causal layer, for streaming: u (B, H), state -> y (B, H), the new state."""
        y, state = self.recurrent_forward(u.unsqueeze(-1), state)  # (B, H, 1)
        return y.squeeze(-1), state

    def convolve(self, u: Tensor) -> Tensor:
        """The state-space part by FFT: u (B, H, L) -> K * u + D u (B, H, L), in at least float32."""
        length = u.shape[-1]
        # the kernel and the FFT convolution in at least float32 whatever the autocast dtype: FFTs have no bf16
        # kernels, and the powers Ā^l of a long kernel need the precision
        with torch.autocast(device_type=u.device.type, enabled=False):
            u32 = u.to(torch.promote_types(u.dtype, torch.float32))
            k_f = torch.fft.rfft(self.convolution_kernel(length), n=2 * length)  # (H, L + 1)
            u_f = torch.fft.rfft(u32, n=2 * length)  # (B, H, L + 1)
            y = torch.fft.irfft(u_f * k_f, n=2 * length)[..., :length]  # (B, H, L): linear convolution
            return y + u32 * self.D.unsqueeze(-1)  # (B, H, L)

    def scan(self, u: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The state-space part by its recurrence x_l = Ā x_(l-1) + B̄ u_l, y_l = 2 Re(C x_l) + D u_l (causal only).

        u (B, H, L), state (B, H, N/2) complex or None (zeros) -> y (B, H, L) in at least float32, the last state.
        """
        if self.bidirectional:
            raise ValueError("a bidirectional S4D sees future steps and has no recurrence: use forward(u)")
        with torch.autocast(device_type=u.device.type, enabled=False):
            u32 = u.to(torch.promote_types(u.dtype, torch.float32))
            A_bar, B_bar, C = self.kernel.discretised()  # (H, N/2) each
            if state is None:
                state = torch.zeros(*u.shape[:2], A_bar.shape[-1], dtype=A_bar.dtype, device=u.device)  # (B, H, N/2)
            y = torch.empty_like(u32)  # (B, H, L)
            for i, u_i in enumerate(u32.unbind(-1)):  # u_i (B, H)
                state = A_bar * state + B_bar * u_i.unsqueeze(-1)  # (B, H, N/2)
                y[..., i] = 2.0 * (C * state).sum(-1).real  # (B, H)
            return y + u32 * self.D.unsqueeze(-1), state  # (B, H, L), (B, H, N/2)

    def mix(self, y: Tensor) -> Tensor:
        """What follows the state-space part, position by position: GELU, dropout, GLU projection (B, H, L)."""
        return self.output(self.dropout(self.activation(y)))

    def ssm_parameters(self) -> list[nn.Parameter]:
        return self.kernel.ssm_parameters()
