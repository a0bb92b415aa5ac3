"""Metrics shared by the families: torchmetrics objects with their arithmetic in pure functions."""

from abr_lab.metrics.abr import ABRMetrics, confusion_scores, regression_scores, regression_stats
from abr_lab.metrics.reconstruction import ReconstructionMetrics
from abr_lab.metrics.signal import WaveformMetrics, waveform_scores, waveform_stats

__all__ = [
    "ABRMetrics",
    "ReconstructionMetrics",
    "WaveformMetrics",
    "confusion_scores",
    "regression_scores",
    "regression_stats",
    "waveform_scores",
    "waveform_stats",
]
