"""RawNet2 family: audio anti-spoofing on raw 16 kHz waveforms (bona fide vs spoof)."""

from abr_lab.rawnet2.datamodule import (
    ASVspoof2019DataModule,
    InTheWildDataModule,
    SpoofDataModule,
    SpoofSynthDataModule,
)
from abr_lab.rawnet2.module import RawNet2Module
from abr_lab.rawnet2.network import RawNet2, RawNet2Ensemble, RawNet2Lite, bonafide_score

__all__ = [
    "ASVspoof2019DataModule",
    "InTheWildDataModule",
    "RawNet2",
    "RawNet2Ensemble",
    "RawNet2Lite",
    "RawNet2Module",
    "SpoofDataModule",
    "SpoofSynthDataModule",
    "bonafide_score",
]
