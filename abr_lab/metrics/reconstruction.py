"""Reconstruction metrics of a denoised or reconstructed waveform: per-recording correlation and pooled SNR.

`ReconstructionMetrics` scores each recording (one row) against its clean target. Correlation is computed per
recording and then averaged, so every recording counts once whatever its amplitude; SNR is pooled over every sample
(Σ target² / Σ error²), so loud recordings weigh more, as in `WaveformMetrics`. Both are also reported over the
recordings with a response (e.g. stimulus above threshold), where a flat line cannot score well by accident.

Everything comes from running sums reduced across processes by summation, so the values are exact under DDP whatever
each process saw. A recording whose target or prediction is (near) constant has no defined correlation: it is left
out of the mean rather than made NaN, and a score with nothing to average is left out of `compute()`'s dict.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

FLAT_TOLERANCE = 1e-12  # a row is flat when its variance is <= FLAT_TOLERANCE × its mean square


def row_correlation(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Pearson correlation of each row of `pred` with the same row of `target`, float64: (B, T) -> r (B,), defined (B,).

    A row is undefined when the target or the prediction is flat, its variance at most `FLAT_TOLERANCE` times its
    mean square (relative, so the test does not depend on units; an all-zero row is flat too), or when it is not
    finite. Undefined rows get r = 0 and ``defined`` False, so sums over r never pick up a NaN.
    """
    p, t = pred.double(), target.double()
    pc = p - p.mean(-1, keepdim=True)
    tc = t - t.mean(-1, keepdim=True)
    var_p, var_t, cov = (pc * pc).mean(-1), (tc * tc).mean(-1), (pc * tc).mean(-1)
    tiny = torch.finfo(torch.float64).tiny
    flat_p = ~(var_p > FLAT_TOLERANCE * ((p * p).mean(-1) + tiny))  # ~(>) so NaN counts as flat
    flat_t = ~(var_t > FLAT_TOLERANCE * ((t * t).mean(-1) + tiny))
    r = cov / torch.sqrt(var_p * var_t)
    defined = ~flat_p & ~flat_t & torch.isfinite(r)
    r = torch.where(defined, r.clamp(-1, 1), torch.zeros_like(r))
    return r, defined


class ReconstructionMetrics(Metric):
    """Per-recording correlation and pooled SNR of reconstructed waveforms, overall and over response recordings.

    `update(pred, target, response=None)`: pred, target (B, T) waveforms, one recording per row; response (B,) bool,
    which recordings carry a response (optional; without it only the overall scores accumulate).

    `compute()` returns a flat dict of float tensors, each key only when defined:

    - ``corr``: mean Pearson r over the recordings with a defined r (see `row_correlation`);
    - ``corr_response``: the same over the response recordings;
    - ``snr_db``: 10 log10(Σ target² / Σ (target - pred)²) pooled over every sample of every recording, present when
      both sums are > 0 (a perfect reconstruction has no finite SNR and is left out);
    - ``snr_db_response``: the same over the response recordings.

    The states also count all recordings (``n``) next to those with a defined r (``corr_n``), so the number skipped
    for a flat target or prediction is ``n - corr_n``. Inputs are assumed finite; a non-finite row is skipped for
    correlation but poisons the SNR sums.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        sums = ("corr_sum", "corr_response_sum", "err2_sum", "target2_sum", "err2_response_sum", "target2_response_sum")
        for name in sums:
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("corr_n", "corr_response_n", "n"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, response: Tensor | None = None) -> None:
        if pred.ndim != 2:
            raise ValueError(f"ReconstructionMetrics.update: pred has shape {tuple(pred.shape)}, expected (B, T)")
        expected = {"target": (target, tuple(pred.shape))}
        if response is not None:
            expected["response"] = (response, tuple(pred.shape[:1]))
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"ReconstructionMetrics.update: {name} has shape {tuple(value.shape)}, expected {shape}"
                )
        r, defined = row_correlation(pred, target)
        t = target.double()
        err2, target2 = ((t - pred.double()) ** 2).sum(-1), (t * t).sum(-1)  # per row (B,)
        self.n += pred.shape[0]
        self.corr_sum += r.sum()
        self.corr_n += defined.sum()
        self.err2_sum += err2.sum()
        self.target2_sum += target2.sum()
        if response is not None:
            mask = response.to(device=r.device, dtype=torch.bool)
            zero = torch.zeros((), dtype=torch.float64, device=r.device)
            self.corr_response_sum += torch.where(mask, r, zero).sum()
            self.corr_response_n += (defined & mask).sum()
            self.err2_response_sum += torch.where(mask, err2, zero).sum()
            self.target2_response_sum += torch.where(mask, target2, zero).sum()

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if self.corr_n > 0:
            out["corr"] = (self.corr_sum / self.corr_n).float()
        if self.corr_response_n > 0:
            out["corr_response"] = (self.corr_response_sum / self.corr_response_n).float()
        for key, target2, err2 in (
            ("snr_db", self.target2_sum, self.err2_sum),
            ("snr_db_response", self.target2_response_sum, self.err2_response_sum),
        ):
            if target2 > 0 and err2 > 0:
                out[key] = (10 * torch.log10(target2 / err2)).float()
        return out
