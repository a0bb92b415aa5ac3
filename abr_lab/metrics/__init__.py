"""Metrics shared by the families: torchmetrics objects with their arithmetic in pure functions."""

from abr_lab.metrics.abr import ABRMetrics, confusion_scores, regression_scores, regression_stats
from abr_lab.metrics.signal import WaveformMetrics, waveform_scores, waveform_stats

__all__ = [
    "ABRMetrics",
    "WaveformMetrics",
    "confusion_scores",
    "regression_scores",
    "regression_stats",
    "waveform_scores",
    "waveform_stats",
]
