"""Metrics shared by the families: torchmetrics objects with their arithmetic in pure functions."""

from abr_lab.metrics.abr import ABRMetrics, confusion_scores, regression_scores, regression_stats
from abr_lab.metrics.mean import SplitMean
from abr_lab.metrics.puzzle import PuzzleMetrics, puzzle_scores, puzzle_stats, rotation_confusion
from abr_lab.metrics.reconstruction import ReconstructionMetrics
from abr_lab.metrics.signal import WaveformMetrics, waveform_scores, waveform_stats
from abr_lab.metrics.spoof import (
    ASVErrorRates,
    SpoofMetrics,
    TDCFCostModel,
    asv_error_rates,
    compute_eer,
    compute_min_tdcf,
    det_curve,
    det_figure,
    roc_auc,
)

__all__ = [
    "ABRMetrics",
    "ASVErrorRates",
    "PuzzleMetrics",
    "ReconstructionMetrics",
    "SplitMean",
    "SpoofMetrics",
    "TDCFCostModel",
    "WaveformMetrics",
    "asv_error_rates",
    "compute_eer",
    "compute_min_tdcf",
    "confusion_scores",
    "det_curve",
    "det_figure",
    "puzzle_scores",
    "puzzle_stats",
    "regression_scores",
    "regression_stats",
    "roc_auc",
    "rotation_confusion",
    "waveform_scores",
    "waveform_stats",
]
