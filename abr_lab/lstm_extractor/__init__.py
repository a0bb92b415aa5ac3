"""LSTM extractor family: pull one sinusoid (1/3/5/7 Hz) out of a noisy mixture, stateful."""

from abr_lab.lstm_extractor.datamodule import SinusoidDataModule
from abr_lab.lstm_extractor.module import LSTMExtractorModule
from abr_lab.lstm_extractor.network import LSTMExtractor, StatefulExtractor

__all__ = ["LSTMExtractor", "LSTMExtractorModule", "SinusoidDataModule", "StatefulExtractor"]
