"""Conditional LSTM that extracts one sinusoid from a mixture, and its step-by-step (L = 1) processor.

Legend: b batch · t time steps · k number of frequencies · h hidden size · n layers.
The input at each step is [S(t), C1..Ck]: the mixture sample and the one-hot of the frequency to extract.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from abr_lab.registry import register_variant

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (n, b, h)

# CPU inference runs long sequences in chunks of time steps, the state carried across, so that each chunk's gate
# buffer, (t, b, 4h) floats, stays under this size. A whole-sequence call allocates ~500 MiB of gates afresh at
# b 256, t 2000 (h 64); glibc serves every block over 32 MiB by mmap, so each call pays a page fault per 4 KiB it
# touches, ~30 % of its time, while blocks this small are reused from the heap.
CPU_CHUNK_BYTES = 16 * 2**20


def build_inputs(mixture: Tensor, condition: Tensor) -> Tensor:
    """Stack the mixture and the one-hot condition per step: (b, t), (b, k) -> (b, t, 1 + k)."""
    cond = condition[:, None, :].expand(-1, mixture.shape[1], -1)  # (b, t, k)
    return torch.cat([mixture[..., None], cond], dim=-1)  # (b, t, 1 + k)


def cpu_chunk_steps(batch_size: int, hidden_size: int, element_size: int = 4) -> int:
    """Time steps per chunk of CPU inference: the most whose gate buffer (t, b, 4h) fits in `CPU_CHUNK_BYTES`."""
    return max(1, CPU_CHUNK_BYTES // (max(1, batch_size) * 4 * hidden_size * element_size))


def detach_state(state: LSTMState) -> LSTMState:
    """Cut the graph between truncated-BPTT chunks; the values carry on."""
    return state[0].detach(), state[1].detach()


@torch.no_grad()
def chrono_init_(lstm: nn.LSTM, max_steps: int) -> None:
    """Forget-gate bias log(U(1, max_steps − 1)) and input-gate bias its negative, in every layer.

    A forget gate of sigmoid(log τ) keeps memories for ~τ steps, so the units start with time constants spread up
    to `max_steps` instead of the ~2 steps of a zero bias; sines with periods of ~1000 steps need that.
    """
    if max_steps < 3:
        raise ValueError(f"chrono_max_steps={max_steps}: need >= 3")
    h = lstm.hidden_size
    for layer in range(lstm.num_layers):
        bias_ih, bias_hh = getattr(lstm, f"bias_ih_l{layer}"), getattr(lstm, f"bias_hh_l{layer}")
        forget = torch.log(torch.empty(h).uniform_(1, max_steps - 1))  # PyTorch gate order: input, forget, cell, out
        bias_ih[h : 2 * h], bias_hh[h : 2 * h] = forget, 0.0
        bias_ih[:h], bias_hh[:h] = -forget, 0.0


class LSTMExtractor(nn.Module):
    """LSTM over [S(t), C] followed by a linear read-out to one value per step.

    Args:
        in_chans: features per step (1 mixture sample + number of frequencies).
        hidden_size: LSTM units per layer.
        num_layers: stacked LSTM layers.
        drop_rate: dropout between LSTM layers (ignored by PyTorch for one layer).
        chrono_max_steps: if set, chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp
            time?") of the forget and input gate biases for dependencies up to this many steps; None keeps
            PyTorch's default (forget gate ≈ 0.5, a memory of a few steps).
    """

    def __init__(
        self,
        in_chans: int = 5,
        hidden_size: int = 64,
        num_layers: int = 2,
        drop_rate: float = 0.1,
        chrono_max_steps: int | None = None,
    ) -> None:
        super().__init__()
        if in_chans < 2 or hidden_size < 1 or num_layers < 1 or not 0 <= drop_rate < 1:
            raise ValueError(
                f"in_chans={in_chans}, hidden_size={hidden_size}, num_layers={num_layers}, drop_rate={drop_rate}: "
                "need in_chans >= 2, hidden_size >= 1, num_layers >= 1, 0 <= drop_rate < 1"
            )
        self.in_chans, self.hidden_size, self.num_layers = in_chans, hidden_size, num_layers
        # encoder: time-major (batch_first=False), so its output is contiguous for the head (see `forward`)
        self.lstm = nn.LSTM(in_chans, hidden_size, num_layers, dropout=drop_rate if num_layers > 1 else 0.0)
        # head
        self.head = nn.Linear(hidden_size, 1)
        if chrono_max_steps is not None:
            chrono_init_(self.lstm, chrono_max_steps)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> LSTMState:
        """All-zero state: the start of a new signal."""
        device = device or self.head.weight.device
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """x (b, t, in_chans), optional state -> prediction (b, t) and the state after the last step."""
        chunk = cpu_chunk_steps(x.shape[0], self.hidden_size, x.element_size())
        if self.training or x.device.type != "cpu" or x.shape[1] <= chunk:  # training: dropout masks as drawn
            return self._forward_once(x, state)
        ys = []
        for piece in x.split(chunk, dim=1):  # (b, chunk, in_chans) each: the same outputs as one pass
            y, state = self._forward_once(piece, state)
            ys.append(y)
        return torch.cat(ys, dim=1), state  # (b, t)

    def _forward_once(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        # Time-major inside: the oneDNN LSTM computes in (t, b, h) anyway, and with batch_first its output is a
        # transposed view that the head would first copy whole (~8 % of inference time at b 256, t 2000).
        features, state = self.lstm(x.transpose(0, 1), state)  # (t, b, h), ((n, b, h), (n, b, h))
        y = self.head(features).squeeze(-1)  # (t, b)
        return y.transpose(0, 1), state  # (b, t)


class StatefulExtractor:
    """Feeds one step at a time (L = 1) and carries the LSTM state between calls: the streaming use of the model.

    Call `reset()` at the start of every new signal. Its outputs equal a full-sequence forward pass.
    """

    def __init__(self, model: LSTMExtractor) -> None:
        self.model = model.eval()
        self.state: LSTMState | None = None

    def reset(self) -> None:
        self.state = None

    @torch.inference_mode()
    def step(self, sample: Tensor, condition: Tensor) -> Tensor:
        """sample (b,) mixture values at one step, condition (b, k) one-hot -> prediction (b,)."""
        x = torch.cat([sample[:, None], condition], dim=-1)[:, None, :]  # (b, 1, 1 + k)
        y, self.state = self.model(x, self.state)  # (b, 1)
        return y[:, 0]

    def run(self, mixture: Tensor, condition: Tensor) -> Tensor:
        """Process whole signals step by step from a fresh state: mixture (b, t), condition (b, k) -> (b, t)."""
        self.reset()
        return torch.stack([self.step(mixture[:, i], condition) for i in range(mixture.shape[1])], dim=1)


register_variant("lstm_extractor", LSTMExtractor, family="lstm_extractor", hidden_size=64, num_layers=2, drop_rate=0.1)
register_variant(
    "lstm_extractor_tiny", LSTMExtractor, family="lstm_extractor", hidden_size=8, num_layers=1, drop_rate=0.0
)
