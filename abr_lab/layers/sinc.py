"""Sinc band-pass filterbank: the raw-waveform front end of RawNet2 (Ravanelli & Bengio 2018; Tak et al. 2021).

Each output channel is an ideal band-pass filter between two cut-offs, ``2 f_hi sinc(2 f_hi n) − 2 f_lo sinc(2 f_lo n)``
(frequencies in cycles per sample), truncated to an odd number of taps and tapered by a Hamming window. The cut-offs
are spaced evenly on the mel scale, so low frequencies get narrow bands as in a mel spectrogram, or evenly in Hz
(``scale="linear"``, as the filterbank of LFCC features), which keeps the high bands as narrow as the low ones.

Fixed filters (the ASVspoof 2021 baseline) are computed once, at construction, into a non-persistent buffer: the
reference rebuilt all of them in Python on every forward pass, and they carry no information a checkpoint needs.
Learnable filters (Jung et al. 2020, after SincNet) keep two parameters per channel, the low cut-off and the
bandwidth, and must rebuild the filters each forward pass so gradients reach those parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hz_to_mel(hz: Tensor | float) -> Tensor:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: Tensor | float) -> Tensor:
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_band_edges(num_bands: int, min_hz: float, max_hz: float) -> Tensor:
    """`num_bands + 1` cut-off frequencies (Hz, float64) evenly spaced on the mel scale from `min_hz` to `max_hz`."""
    return mel_to_hz(
        torch.linspace(float(hz_to_mel(min_hz)), float(hz_to_mel(max_hz)), num_bands + 1, dtype=torch.float64)
    )


SCALES = ("mel", "linear")


def band_edges_on(scale: str, num_bands: int, min_hz: float, max_hz: float) -> Tensor:
    """`num_bands + 1` cut-offs (Hz, float64) evenly spaced on `scale`: ``mel`` (`mel_band_edges`) or ``linear``."""
    if scale == "mel":
        return mel_band_edges(num_bands, min_hz, max_hz)
    if scale == "linear":
        return torch.linspace(min_hz, max_hz, num_bands + 1, dtype=torch.float64)
    raise ValueError(f"scale={scale!r}: expected one of {'|'.join(SCALES)}")


def sinc_bandpass(low_hz: Tensor, high_hz: Tensor, kernel_size: int, sample_rate: float) -> Tensor:
    """Hamming-windowed ideal band-pass filters, one per (low, high) pair: (c,), (c,) -> (c, kernel_size).

    Differentiable in `low_hz` and `high_hz`; computed in their dtype.
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size}: a symmetric band-pass filter needs an odd number of taps")
    half = (kernel_size - 1) / 2
    n = torch.arange(-half, half + 1, dtype=low_hz.dtype, device=low_hz.device)  # (k,) taps, centred on 0
    window = torch.hamming_window(kernel_size, periodic=False, dtype=low_hz.dtype, device=low_hz.device)  # (k,)
    lo = (low_hz / sample_rate)[:, None]  # (c, 1) cycles per sample
    hi = (high_hz / sample_rate)[:, None]
    ideal = 2 * hi * torch.sinc(2 * hi * n) - 2 * lo * torch.sinc(2 * lo * n)  # (c, k)
    return ideal * window


class SincFilterbank(nn.Module):
    """Band-pass sinc filters on a mono waveform: (b, 1, t) -> (b, channels, t − kernel_size + 1) (no padding).

    Args:
        channels: number of bands.
        kernel_size: taps per filter; an even number is made odd by adding one (1,024 -> 1,025), as the reference.
        sample_rate: of the input, Hz.
        min_hz, max_hz: range the bands cover (max_hz defaults to Nyquist).
        scale: how the cut-offs are spaced, ``mel`` (the reference) or ``linear`` (`band_edges_on`).
        learnable: learn each band's low cut-off and width (rebuilt every forward pass) instead of fixed filters.
    """

    def __init__(
        self,
        channels: int = 20,
        kernel_size: int = 1024,
        sample_rate: float = 16_000.0,
        min_hz: float = 0.0,
        max_hz: float | None = None,
        learnable: bool = False,
        scale: str = "mel",
    ) -> None:
        super().__init__()
        max_hz = sample_rate / 2 if max_hz is None else max_hz
        if channels < 1 or not 0 <= min_hz < max_hz <= sample_rate / 2:
            raise ValueError(
                f"SincFilterbank: need channels >= 1 and 0 <= min_hz < max_hz <= sample_rate / 2; got "
                f"channels={channels}, min_hz={min_hz}, max_hz={max_hz}, sample_rate={sample_rate}"
            )
        self.channels, self.sample_rate = channels, float(sample_rate)
        self.kernel_size = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size
        self.min_hz, self.max_hz = float(min_hz), float(max_hz)
        self.learnable, self.scale = learnable, scale
        edges = band_edges_on(scale, channels, min_hz, max_hz)  # (c + 1,) Hz
        if learnable:
            # SincNet parametrisation: low = min_hz + |low_offset|, high = low + |width|, clamped to max_hz
            self.low_offset = nn.Parameter((edges[:-1] - min_hz).float())
            self.width = nn.Parameter((edges[1:] - edges[:-1]).float())
        else:
            filters = sinc_bandpass(edges[:-1], edges[1:], self.kernel_size, self.sample_rate)  # (c, k) float64
            self.register_buffer("filters", filters.float()[:, None, :], persistent=False)  # (c, 1, k)

    def band_edges(self) -> tuple[Tensor, Tensor]:
        """Current low and high cut-offs in Hz, (c,) each."""
        if not self.learnable:
            edges = band_edges_on(self.scale, self.channels, self.min_hz, self.max_hz)
            return edges[:-1].float(), edges[1:].float()
        low = self.min_hz + self.low_offset.abs()
        high = torch.clamp(low + self.width.abs(), max=self.max_hz)
        return low, high

    def kernels(self) -> Tensor:
        """The filters as a conv1d weight, (c, 1, k)."""
        if not self.learnable:
            return self.filters
        low, high = self.band_edges()
        return sinc_bandpass(low, high, self.kernel_size, self.sample_rate)[:, None, :]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"SincFilterbank expects (batch, 1, samples), got {tuple(x.shape)}")
        if x.shape[-1] < self.kernel_size:
            raise ValueError(f"input of {x.shape[-1]} samples is shorter than the {self.kernel_size}-tap filters")
        return F.conv1d(x, self.kernels().to(x.dtype))  # (b, c, t − k + 1)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, sample_rate={self.sample_rate:g}, "
            f"band={self.min_hz:g}-{self.max_hz:g} Hz ({self.scale}-spaced), learnable={self.learnable}"
        )
