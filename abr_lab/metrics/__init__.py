"""Metrics shared by the families: torchmetrics objects with their arithmetic in pure functions."""

from abr_lab.metrics.signal import SignalNoiseRatio, signal_metrics, snr_db

__all__ = ["SignalNoiseRatio", "signal_metrics", "snr_db"]
