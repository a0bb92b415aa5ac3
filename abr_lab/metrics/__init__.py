"""Metrics shared by the families: torchmetrics objects with their arithmetic in pure functions."""

from abr_lab.metrics.signal import WaveformMetrics, waveform_scores, waveform_stats

__all__ = ["WaveformMetrics", "waveform_scores", "waveform_stats"]
