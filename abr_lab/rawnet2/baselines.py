"""The classic ASVspoof countermeasure baseline, LFCC features scored by two GMMs, and its discriminative twin.

LFCC (linear-frequency cepstral coefficients; Sahidullah, Kinnunen & Hanilçi, Interspeech 2015) are MFCCs with the
triangular filters spaced linearly instead of on the mel scale, so the high band, where vocoders and waveform
generators leave most of their artefacts, keeps as many filters as the low band. The ASVspoof 2019 / 2021 LA
baseline (Todisco et al. 2019) models the LFCC frames of each class with a 512-component diagonal GMM and scores a
trial by the mean per-frame log-likelihood ratio, log p(x | bona fide) - log p(x | spoof): higher means bona fide
(`LFCCGMM`). `LFCCMLP` classifies the same frames with a perceptron and scores a trial by the mean per-frame
log-odds: the same features modelled discriminatively, to tell what the features carry from what the model makes of it.

Pipeline of `lfcc`, per 20-ms Hamming frame every 10 ms:
    pre-emphasis 1 - 0.97 z⁻¹ -> |FFT|² (512 bins) -> 20 linear triangular filters on 0..fs/2 -> log (floored)
    -> orthonormal DCT-II, keep 20 coefficients (c0 included) -> append Δ and ΔΔ (regression over ±2 frames) = 60 dims.

Legend: f frames · k FFT bins (n_fft // 2 + 1) · m filters · c cepstra.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.fft import dct
from sklearn.mixture import GaussianMixture
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

LOG_FLOOR = 1e-10  # floor of the filterbank energies before the log: silence (digital zeros) stays finite

# --------------------------------------------------------------------------------------------------------------
# LFCC features


def linear_filter_edges(num_filters: int = 20, sample_rate: int = 16_000) -> np.ndarray:
    """Corner frequencies (num_filters + 2,) in Hz: filter m rises from edge m, peaks at m + 1, falls to m + 2.

    Equally spaced from 0 to fs/2, so the bank covers the whole band with the same resolution everywhere.
    """
    return np.linspace(0.0, sample_rate / 2, num_filters + 2)


def linear_filterbank(num_filters: int = 20, n_fft: int = 512, sample_rate: int = 16_000) -> np.ndarray:
    """Triangular filters (m, k) of unit peak on the FFT bin frequencies, linearly spaced from 0 to fs/2.

    The triangles are evaluated on the exact bin frequencies (not rounded to bins, as the MATLAB reference does),
    so neighbouring filters overlap by half and sum to 1 between the first and last peak.
    """
    edges = linear_filter_edges(num_filters, sample_rate)
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # (k,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (m, 1) each
    rising = (freqs - lower) / (centre - lower)  # (m, k)
    falling = (upper - freqs) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def delta_features(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas (f, c) over ±`width` frames, edges padded by repeating the first / last frame.

    d_t = Σ_n n (x_{t+n} - x_{t-n}) / (2 Σ_n n²), n = 1..width (HTK's formula; the ASVspoof MATLAB `Deltas`).
    """
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")  # (f + 2 width, c)
    num_frames = len(features)
    out = np.zeros_like(features)
    for n in range(1, width + 1):
        out += n * (padded[width + n : width + n + num_frames] - padded[width - n : width - n + num_frames])
    return out / (2 * sum(n * n for n in range(1, width + 1)))


def _check_audio(audio: np.ndarray, win_length: int) -> np.ndarray:
    """`audio` as a 1-D float64 array, or a ValueError saying what is wrong with it."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D (samples,), got shape {audio.shape}")
    if len(audio) < win_length:
        raise ValueError(f"audio has {len(audio)} samples, fewer than one frame (win_length={win_length})")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio holds NaN or infinite samples")
    return audio.astype(np.float64, copy=False)


def lfcc(
    audio: np.ndarray,
    sample_rate: int = 16_000,
    num_ceps: int = 20,
    num_filters: int = 20,
    win_length: int = 320,
    hop_length: int = 160,
    n_fft: int = 512,
    deltas: bool = True,
    pre_emphasis: float = 0.97,
    delta_width: int = 2,
) -> np.ndarray:
    """LFCC frames (f, 3 num_ceps) with Δ and ΔΔ, or (f, num_ceps) without; float32. See the module docstring.

    Frames are not padded: f = 1 + (len(audio) - win_length) // hop_length (a clip shorter than one window is an
    error). ``pre_emphasis=0`` turns the pre-emphasis filter off; the reference applies 0.97. Scaling the audio by
    a gain only shifts c0 (the log energy; above the floor), so the others do not depend on the recording level.
    """
    if not 1 <= num_ceps <= num_filters:
        raise ValueError(f"need 1 <= num_ceps <= num_filters, got num_ceps={num_ceps}, num_filters={num_filters}")
    if hop_length <= 0 or not 0 < win_length <= n_fft:
        raise ValueError(f"need hop_length > 0 and 0 < win_length <= n_fft, got {hop_length}, {win_length}, {n_fft}")
    x = _check_audio(audio, win_length)
    if pre_emphasis:
        x = np.concatenate([x[:1], x[1:] - pre_emphasis * x[:-1]])
    frames = np.lib.stride_tricks.sliding_window_view(x, win_length)[::hop_length]  # (f, win_length), a view
    power = np.abs(np.fft.rfft(frames * np.hamming(win_length), n=n_fft)) ** 2  # (f, k)
    energies = power @ linear_filterbank(num_filters, n_fft, sample_rate).T  # (f, m)
    ceps = dct(np.log(np.maximum(energies, LOG_FLOOR)), type=2, norm="ortho", axis=1)[:, :num_ceps]  # (f, c)
    if deltas:
        delta = delta_features(ceps, delta_width)
        ceps = np.concatenate([ceps, delta, delta_features(delta, delta_width)], axis=1)  # (f, 3 c)
    return ceps.astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Frame-level countermeasures


class FrameCountermeasure(ABC):
    """Scores LFCC frames one at a time; a clip's score is the mean of its frames' bona fide vs spoof log-ratios.

    The part the LFCC countermeasures share: features, validated and subsampled training frames (at most
    `max_frames` per class, drawn with `seed`), batched scoring. A subclass fits its frame model in `_fit_frames`
    and returns per-frame log-ratios (higher = more bona fide) from `_frame_llr`.
    """

    def __init__(
        self,
        max_frames: int,
        seed: int,
        sample_rate: int = 16_000,
        num_ceps: int = 20,
        num_filters: int = 20,
        win_length: int = 320,
        hop_length: int = 160,
        n_fft: int = 512,
        deltas: bool = True,
        pre_emphasis: float = 0.97,
    ) -> None:
        self.max_frames, self.seed = max_frames, seed
        self.lfcc_options = dict(
            sample_rate=sample_rate,
            num_ceps=num_ceps,
            num_filters=num_filters,
            win_length=win_length,
            hop_length=hop_length,
            n_fft=n_fft,
            deltas=deltas,
            pre_emphasis=pre_emphasis,
        )
        self.fitted = False

    def features(self, clip: np.ndarray) -> np.ndarray:
        """LFCC frames (f, d) of one clip with this model's options."""
        return lfcc(clip, **self.lfcc_options)

    def fit(self, clips: Sequence[np.ndarray], labels: Sequence[int]) -> FrameCountermeasure:
        """Fit on the pooled (subsampled) LFCC frames of `clips`; label 1 = bona fide, 0 = spoof."""
        labels = np.asarray(labels)
        if len(labels) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(labels)} labels")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be 1 (bona fide) or 0 (spoof), got values {np.unique(labels).tolist()}")
        if not (labels == 1).any() or not (labels == 0).any():
            raise ValueError(f"fit needs clips of both classes, got only label {np.unique(labels).tolist()}")
        self.fitted = False
        rng = np.random.default_rng(self.seed)
        per_class = []
        for label in (1, 0):
            frames = np.concatenate([self.features(c) for c, y in zip(clips, labels, strict=True) if y == label])
            if len(frames) > self.max_frames:
                frames = frames[np.sort(rng.choice(len(frames), self.max_frames, replace=False))]
            per_class.append(frames)
        self._fit_frames(*per_class)
        self.fitted = True
        return self

    @abstractmethod
    def _fit_frames(self, bonafide: np.ndarray, spoof: np.ndarray) -> None:
        """Fit the frame model on bona fide frames (n1, d) and spoof frames (n0, d)."""

    @abstractmethod
    def _frame_llr(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame bona fide vs spoof log-ratio (f,) of frames (f, d); called only once fitted."""

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame log-ratios (f,): higher = more bona fide."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(clips, labels) first")
        return self._frame_llr(frames)

    def score(self, clip: np.ndarray) -> float:
        """Mean per-frame log-ratio of `clip`: higher = more bona fide (the reference's convention)."""
        return float(self.frame_scores(self.features(clip)).mean())

    def score_many(self, clips: Sequence[np.ndarray], batch_frames: int = 200_000) -> np.ndarray:
        """Scores (n,) of `clips`; the frames of several clips are scored together, ~`batch_frames` at a time."""
        scores = np.empty(len(clips))
        start = 0
        while start < len(clips):
            feats, total = [], 0
            while start + len(feats) < len(clips) and (not feats or total < batch_frames):
                feats.append(self.features(clips[start + len(feats)]))
                total += len(feats[-1])
            llr = self.frame_scores(np.concatenate(feats))  # (Σ f,)
            offsets = np.cumsum([0] + [len(f) for f in feats[:-1]])
            scores[start : start + len(feats)] = np.add.reduceat(llr, offsets) / [len(f) for f in feats]
            start += len(feats)
        return scores


class LFCCGMM(FrameCountermeasure):
    """Bona fide and spoof GMMs on LFCC frames; a clip's score is its mean per-frame log-likelihood ratio.

    Differences from the ASVspoof 2019 / 2021 reference (512 components, EM on every training frame): by default
    128 components and at most `max_frames` frames per class, drawn at random with `seed`, so that k-means + EM
    take minutes on two CPU cores instead of hours. Both GMMs have diagonal covariances, as in the reference.

    Args:
        n_components: Gaussians per class model.
        max_frames: frames per class kept for fitting (all of them if fewer).
        max_iter: EM iterations at most (sklearn stops earlier when the likelihood gain falls under 1e-3).
        seed: the frame subsampling and the k-means initialisation of both GMMs.
        lfcc_options: sample_rate, num_ceps, num_filters, win_length, hop_length, n_fft, deltas, pre_emphasis
            (passed to `lfcc`).
    """

    def __init__(
        self,
        n_components: int = 128,
        max_frames: int = 200_000,
        max_iter: int = 100,
        seed: int = 0,
        **lfcc_options: Any,
    ) -> None:
        if n_components < 1 or max_frames < n_components or max_iter < 1:
            raise ValueError(
                f"need n_components >= 1, max_frames >= n_components and max_iter >= 1, got "
                f"n_components={n_components}, max_frames={max_frames}, max_iter={max_iter}"
            )
        super().__init__(max_frames, seed, **lfcc_options)
        self.n_components, self.max_iter = n_components, max_iter
        self.bonafide: GaussianMixture | None = None
        self.spoof: GaussianMixture | None = None

    def _fit_frames(self, bonafide: np.ndarray, spoof: np.ndarray) -> None:
        models = []
        for label, frames in ((1, bonafide), (0, spoof)):
            if len(frames) < self.n_components:
                raise ValueError(f"class {label} has {len(frames)} frames, fewer than n_components={self.n_components}")
            gmm = GaussianMixture(
                self.n_components, covariance_type="diag", max_iter=self.max_iter, random_state=self.seed
            )
            models.append(gmm.fit(frames))
        self.bonafide, self.spoof = models

    def _frame_llr(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame log p(x | bona fide) - log p(x | spoof), (f,)."""
        return self.bonafide.score_samples(frames) - self.spoof.score_samples(frames)


class LFCCMLP(FrameCountermeasure):
    """A perceptron classifying LFCC frames as bona fide or spoof; a clip's score is its mean per-frame log-odds.

    The discriminative counterpart of `LFCCGMM` on the same frames, the same subsampling and the same clip score:
    it separates "what the short-time magnitude envelope carries" from "how it is modelled". Features are
    standardised on the training frames; sklearn's `MLPClassifier` (ReLU, Adam, batch 200) stops early when the
    score on a random 10 % of the training frames stops rising. The log-odds are clipped to ±log((1 - eps) / eps),
    eps = 1e-6, so a confident frame cannot dominate a clip's mean.

    Args:
        hidden: widths of the hidden layers.
        max_frames: frames per class kept for fitting (all of them if fewer).
        max_epochs: passes over the frames at most.
        seed: the frame subsampling, the initialisation and the early-stopping split.
        lfcc_options: passed to `lfcc`, as for `LFCCGMM`.
    """

    EPS = 1e-6

    def __init__(
        self,
        hidden: Sequence[int] = (256, 256),
        max_frames: int = 200_000,
        max_epochs: int = 30,
        seed: int = 0,
        **lfcc_options: Any,
    ) -> None:
        if not hidden or min(hidden) < 1 or max_frames < 1 or max_epochs < 1:
            raise ValueError(
                f"need hidden widths >= 1, max_frames >= 1 and max_epochs >= 1, got hidden={list(hidden)}, "
                f"max_frames={max_frames}, max_epochs={max_epochs}"
            )
        super().__init__(max_frames, seed, **lfcc_options)
        self.hidden, self.max_epochs = tuple(hidden), max_epochs
        self.pipeline: Pipeline | None = None

    def _fit_frames(self, bonafide: np.ndarray, spoof: np.ndarray) -> None:
        frames = np.concatenate([bonafide, spoof])  # (n1 + n0, d)
        labels = np.concatenate([np.ones(len(bonafide), int), np.zeros(len(spoof), int)])
        mlp = MLPClassifier(self.hidden, max_iter=self.max_epochs, early_stopping=True, random_state=self.seed)
        self.pipeline = make_pipeline(StandardScaler(), mlp).fit(frames, labels)

    def _frame_llr(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame log p(bona fide | x) - log p(spoof | x), (f,)."""
        p = np.clip(self.pipeline.predict_proba(frames)[:, 1], self.EPS, 1 - self.EPS)  # (f,) P(bona fide)
        return np.log(p) - np.log1p(-p)
