"""``spoof_synth``: synthetic 16 kHz bona fide and spoofed speech for anti-spoofing (an ASVspoof-LA-like toy corpus).

**Bona fide** utterances come from a source–filter model. A Rosenberg glottal pulse train follows a natural pitch
contour (per-speaker mean F0 of 85–260 Hz, declination over the utterance plus slow random intonation) with
cycle-to-cycle jitter and shimmer, and carries pulsed aspiration noise (breathiness). It excites a vocal tract of
five second-order resonators whose frequencies move between vowel targets (coarticulated, scaled by the speaker's
vocal-tract length) and is followed by a lip-radiation first difference. Voiced syllables alternate with
noise-excited fricative-like segments (band-pass noise at /s/, /sh/ or /f/-like centres), short gaps, pauses and
occasional breaths. A speaker is a fixed set of traits drawn from its own seed (F0 mean and range, formant scale,
jitter, shimmer, breathiness, glottal open quotient, speaking rate); train, val and test draw from disjoint speaker
pools (ids offset by 1000 per split), like the ASVspoof train / dev / eval partitions.

**Spoofs** are the same kind of utterance (same split's speakers, separate draws) passed through an attack system
that leaves artefacts that real speech synthesis and conversion leave:

- ``A01`` Griffin–Lim from an 80-band mel spectrogram: mel → linear by pseudo-inverse (spectral over-smoothing),
  32 fast Griffin–Lim iterations (inconsistent, partly random phase).
- ``A02`` STFT phase randomisation: the magnitude is kept, every bin gets a random phase, overlap-add (phase
  incoherence across frames with an almost unchanged magnitude envelope).
- ``A03`` unit concatenation: 20–60 ms units are copied, repeated or dropped and joined by overlap-add with small
  gain mismatches (pitch and phase discontinuities at the joins).
- ``A04`` telephone-like codec: down to 8 kHz (no energy above 4 kHz) with 8-bit mu-law quantisation and back.
- ``A05`` (unseen) harmonic vocoder: F0 and a cepstrally smoothed envelope are estimated and re-synthesised as a
  sum of harmonics with fixed random phase offsets plus envelope-shaped noise in unvoiced frames.
- ``A06`` (unseen) LPC vocoder: order-18 LPC per 8 ms frame re-excited by a pulse train (voiced) or white noise
  (unvoiced): buzzy excitation, all-pole envelope, binary voicing.
- ``A07`` (unseen) coarse Griffin–Lim: a 40-band mel spectrogram, temporally smoothed, inverted with only 8 plain
  Griffin–Lim iterations: stronger over-smoothing and phase artefacts of the A01 family.
- ``A08`` (in no split by default) channel vocoder: 16 mel-band amplitudes every 8 ms imposed on a mixed
  excitation (a jitter-free pulse train below a cut-off of 2.5–5 kHz in voiced frames, white noise elsewhere). A
  vocoder that is neither A05 nor A06 (band-stepped envelope, zero-phase pulses, smoothed pitch), meant as a
  held-out *validation* attack (``val_attacks``): model selection then rewards detecting a vocoder training never
  saw, while the test attacks stay unseen by both training and selection.

Train and val use A01–A04 (val: ``val_attacks`` when set); test uses A01 and A02 (known) plus A05–A07 (unseen). The
detector can generalise through shared artefact families (phase incoherence, over-smoothed envelopes, band and
excitation artefacts), not trivially.

**No shortcuts**: both classes get the same post-processing distribution — a random 2nd-order high-pass
(40–150 Hz, DC-free), loudness normalisation to an RMS of −32…−20 dBFS and white channel noise at −75…−60 dBFS — and
the same uniform duration distribution, so level, silence and noise floor are not class cues.

Files are HDF5: ``audio`` int16 (all clips concatenated), ``offsets`` int64 (n + 1), ``label`` int8 (1 = bona fide,
0 = spoof), ``attack`` int8 (index into ``ATTACK_IDS``; 0 is bona fide, ``"-"`` as in ASVspoof protocols) and
``speaker`` int32; the attack names are the JSON file attribute ``attack_ids``. Every clip has its own random stream
``default_rng([seed, split_index, i])``, so a file does not depend on processing order.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import butter, lfilter, medfilt, resample_poly, sosfilt
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from abr_lab.data import DataFileError, ensure_generated, params_hash, read_arrays
from abr_lab.data.workers import usable_cores

SAMPLE_RATE = 16_000
SPLITS: tuple[str, ...] = ("train", "val", "test")
KEYS: tuple[str, ...] = ("audio", "offsets", "label", "attack", "speaker")
GENERATOR_VERSION = 1  # bump when the maths changes so cached files are not reused
SPEAKER_ID_OFFSET = 1000  # speaker ids of split s are s * 1000 + j: disjoint pools
HOP = 128  # control rate of the source-filter model and the frame-wise filters (8 ms)
FILTER_FFT = 1024  # FFT size of the frame-wise filters: room for the resonators' impulse responses to decay

# (F1, F2, F3) in Hz of an adult male vocal tract (Peterson & Barney): i ɪ e æ ɑ ɔ ʊ u ʌ ɝ
VOWELS = np.array(
    [
        [270, 2290, 3010],
        [390, 1990, 2550],
        [530, 1840, 2480],
        [660, 1720, 2410],
        [730, 1090, 2440],
        [570, 840, 2410],
        [440, 1020, 2240],
        [300, 870, 2240],
        [640, 1190, 2390],
        [490, 1350, 1690],
    ],
    dtype=np.float64,
)
SCHWA = np.array([500.0, 1500.0, 2500.0])


# ---------------------------------------------------------------------------------------------------------------
# speakers and the bona fide source-filter model


@dataclass(frozen=True)
class Speaker:
    """Fixed voice traits of one synthetic speaker."""

    speaker_id: int
    f0_mean: float  # Hz
    f0_range: float  # largest intonation excursion, semitones
    formant_scale: float  # 1 / relative vocal-tract length: > 1 raises every formant
    jitter: float  # relative std of cycle-to-cycle F0
    shimmer: float  # relative std of cycle-to-cycle amplitude
    breathiness: float  # aspiration noise relative to the glottal pulse
    open_quotient: float  # share of the glottal period the glottis is open
    rate: float  # speaking rate: segment durations are divided by it

    @classmethod
    def from_id(cls, speaker_id: int, seed: int) -> Speaker:
        """The speaker's traits, drawn from its own stream (so they do not depend on which clips use it)."""
        rng = np.random.default_rng([seed, 0x5EA4E2, speaker_id])
        low_voice = rng.random() < 0.5  # roughly male / female
        return cls(
            speaker_id=speaker_id,
            f0_mean=float(rng.uniform(85, 155) if low_voice else rng.uniform(165, 260)),
            f0_range=float(rng.uniform(2.0, 6.0)),
            formant_scale=float(rng.uniform(0.9, 1.02) if low_voice else rng.uniform(1.05, 1.2)),
            jitter=float(rng.uniform(0.003, 0.015)),
            shimmer=float(rng.uniform(0.02, 0.08)),
            breathiness=float(rng.uniform(0.005, 0.04)),
            open_quotient=float(rng.uniform(0.5, 0.75)),
            rate=float(rng.uniform(0.8, 1.25)),
        )


def _segment_plan(rng: np.random.Generator, speaker: Speaker, n: int) -> list[tuple[str, int, int]]:
    """Segments (kind, start, stop) covering n samples: syllables of optional fricative onset, voiced nucleus,
    optional fricative coda, then a short gap or a pause."""
    plan: list[tuple[str, int, int]] = []
    t = 0

    def add(kind: str, lo: float, hi: float) -> None:
        nonlocal t
        length = int(rng.uniform(lo, hi) / speaker.rate * SAMPLE_RATE)
        if t < n:
            plan.append((kind, t, min(t + length, n)))
        t += length

    add("pause", 0.03, 0.25)
    while t < n:
        if rng.random() < 0.45:
            add("unvoiced", 0.04, 0.12)
        add("voiced", 0.08, 0.32)
        if rng.random() < 0.25:
            add("unvoiced", 0.03, 0.10)
        add("pause", 0.08, 0.35) if rng.random() < 0.2 else add("gap", 0.0, 0.03)
    return plan


def _f0_contour(rng: np.random.Generator, speaker: Speaker, n: int) -> np.ndarray:
    """Per-sample F0 in Hz: declination plus slow random intonation, bounded by the speaker's range."""
    t = np.arange(n) / SAMPLE_RATE
    declination = speaker.f0_range * 0.5 * (0.5 - t / t[-1].clip(min=1e-3))  # semitones, falls over the utterance
    knots = np.arange(0, t[-1] + 0.4, 0.2)
    intonation = np.interp(t, knots, rng.normal(0, speaker.f0_range / 3, knots.size))
    semitones = uniform_filter1d(np.clip(declination + intonation, -speaker.f0_range, speaker.f0_range), 801)
    return speaker.f0_mean * 2 ** (semitones / 12)


def _glottal_source(rng: np.random.Generator, speaker: Speaker, n: int) -> np.ndarray:
    """Rosenberg glottal flow pulses with jitter and shimmer, shape (n,), peak about 1."""
    f0 = _f0_contour(rng, speaker, n)
    cycles0 = (np.cumsum(f0) / SAMPLE_RATE).astype(np.int64)
    f0 = f0 * (1 + speaker.jitter * rng.standard_normal(cycles0[-1] + 2)[cycles0])  # jitter: one draw per cycle
    phase = np.cumsum(f0) / SAMPLE_RATE
    cycle = phase.astype(np.int64)
    frac = phase - cycle  # position in the glottal cycle, [0, 1)
    tp, tn = 0.65 * speaker.open_quotient, 0.35 * speaker.open_quotient  # opening and closing phases
    pulse = np.zeros(n)
    opening, closing = frac < tp, (frac >= tp) & (frac < tp + tn)
    pulse[opening] = 0.5 * (1 - np.cos(np.pi * frac[opening] / tp))
    pulse[closing] = np.cos(0.5 * np.pi * (frac[closing] - tp) / tn)
    shimmer = np.clip(1 + speaker.shimmer * rng.standard_normal(cycle[-1] + 2), 0.2, None)[cycle]
    aspiration = speaker.breathiness * rng.standard_normal(n) * (0.25 + pulse)  # noise pulsed with the glottis
    return pulse * shimmer + aspiration


def _formant_response(rng: np.random.Generator, speaker: Speaker, plan: list, num_frames: int) -> np.ndarray:
    """Frequency response of the 5-formant vocal tract per control frame, shape (frames, FILTER_FFT // 2 + 1)."""
    targets = np.tile(SCHWA, (num_frames, 1))  # (f, 3) F1..F3, neutral outside voiced segments
    for kind, start, stop in plan:
        if kind == "voiced":
            a, b = start // HOP, max(stop // HOP, start // HOP + 1)
            v0, v1 = VOWELS[rng.integers(len(VOWELS), size=2)]
            w = np.linspace(0, 1, b - a)[:, None]
            targets[a:b] = (1 - w) * v0 + w * v1  # glide between two vowel targets
    targets = uniform_filter1d(targets, 7, axis=0)  # coarticulation: ~50 ms smoothing
    high = np.tile([3300.0, 4200.0] * rng.uniform(0.95, 1.05, 2), (num_frames, 1))  # F4, F5
    freqs = np.minimum(np.concatenate([targets, high], axis=1) * speaker.formant_scale, 7500)  # (f, 5)
    bandwidths = np.array([70.0, 100.0, 140.0, 250.0, 300.0]) * rng.uniform(0.8, 1.3)  # (5,)
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)  # pole radii, (5,)
    cos = np.cos(2 * np.pi * freqs / SAMPLE_RATE)  # (f, 5)
    poly = np.ones((num_frames, 1))  # A(z) = prod_k (1 - 2 r_k cos θ_k z^-1 + r_k^2 z^-2), coefficients (f, 11)
    for k in range(5):
        quadratic = np.stack([np.ones(num_frames), -2 * r[k] * cos[:, k], np.full(num_frames, r[k] ** 2)], axis=1)
        product = np.zeros((num_frames, poly.shape[1] + 2))
        for j in range(3):
            product[:, j : j + poly.shape[1]] += quadratic[:, j : j + 1] * poly
        poly = product
    delays = np.exp(-2j * np.pi * np.outer(np.arange(11), fft.rfftfreq(FILTER_FFT))).astype(np.complex64)  # (11, k)
    return poly.sum(axis=1, keepdims=True).astype(np.float32) / (poly.astype(np.float32) @ delays)  # unit DC gain


@lru_cache(maxsize=8)
def _bandpass(lo: float, hi: float) -> np.ndarray:
    return butter(2, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos")


def _band_noise(rng: np.random.Generator, length: int, lo: float, hi: float) -> np.ndarray:
    """Unit-RMS band-pass noise with a tapered (Tukey-like) envelope."""
    x = sosfilt(_bandpass(lo, hi), rng.standard_normal(length + 256))[256:]
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    ramp = min(length // 4, 160)
    taper = np.ones(length)
    if ramp > 0:
        taper[:ramp] = taper[-ramp:][::-1] = np.linspace(0, 1, ramp)
    return x * taper


def synthesize_utterance(rng: np.random.Generator, speaker: Speaker, seconds: float) -> np.ndarray:
    """A bona fide speech-like utterance of `seconds`, float32 with RMS 0.1 (see the module docstring)."""
    n = max(int(round(seconds * SAMPLE_RATE)), 2 * HOP)
    plan = _segment_plan(rng, speaker, n)
    voicing, stress = np.zeros(n), np.zeros(n)
    for kind, start, stop in plan:
        if kind == "voiced":
            voicing[start:stop] = 1.0
            stress[start:stop] = rng.uniform(0.55, 1.0)
    gate = uniform_filter1d(uniform_filter1d(voicing * stress, 160), 160)  # ~20 ms onset / offset ramps
    gate *= np.linspace(1.0, 0.7, n)  # loudness declines with subglottal pressure
    num_frames = -(-n // HOP) + 1
    source = _glottal_source(rng, speaker, n) * gate
    voiced = _framewise_filter(source, _formant_response(rng, speaker, plan, num_frames))
    voiced = np.diff(voiced, prepend=0.0)  # lip radiation
    level = np.sqrt(np.mean(voiced[voicing > 0] ** 2)) if voicing.any() else 1e-3
    out = voiced
    for kind, start, stop in plan:
        length = stop - start
        if kind == "unvoiced" and length > 32:
            lo, hi = [(3800, 7500), (2000, 5000), (1200, 7800)][rng.integers(3)]  # /s/, /sh/, /f/-like
            out[start:stop] += _band_noise(rng, length, lo, hi) * level * rng.uniform(0.1, 0.4)
        elif kind == "pause" and length > 0.15 * SAMPLE_RATE and rng.random() < 0.4:
            out[start:stop] += _band_noise(rng, length, 300, 2500) * level * rng.uniform(0.02, 0.06)  # breath
    return (0.1 * out / (np.sqrt(np.mean(out**2)) + 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# frame helpers shared by the model and the attacks


@lru_cache(maxsize=8)
def _hann(length: int) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)  # periodic: overlap-adds to a constant
    return window.astype(np.float32)


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """Frames centred on t = f * hop, f = 0 .. ceil(n / hop), shape (f, size); zero-padded at both ends."""
    tail = (-len(x)) % hop
    return sliding_window_view(np.pad(x.astype(np.float32), (size // 2, size // 2 + tail)), size)[::hop]


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Sum frames (f, size) placed hop apart; size must be a multiple of hop. Length (f - 1) * hop + size."""
    num, size = frames.shape
    parts = size // hop
    out = np.zeros((num + parts - 1, hop), dtype=frames.dtype)
    for p, chunk in enumerate(frames.reshape(num, parts, hop).transpose(1, 0, 2)):  # chunk: (f, hop)
        out[p : p + num] += chunk
    return out.reshape(-1)


def _framewise_filter(x: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Time-varying filtering: Hann frames of 2 * HOP (summing to one) each filtered by its own response, (f, k),
    with zero padding to FILTER_FFT, then overlap-added. Same length as x."""
    frames = _frames(x, 2 * HOP, HOP) * _hann(2 * HOP)  # (f, 2 hop), frame f covers [f hop - hop, f hop + hop)
    y = fft.irfft(fft.rfft(frames, FILTER_FFT) * response.astype(np.complex64), FILTER_FFT)  # (f, FILTER_FFT)
    return _overlap_add(y, HOP)[HOP : HOP + len(x)]


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Centred STFT with a periodic Hann window, shape (frames, n_fft // 2 + 1)."""
    return fft.rfft(_frames(x, n_fft, hop) * _hann(n_fft), axis=-1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of `_stft` (least-squares for inconsistent spectrograms)."""
    y = _overlap_add(fft.irfft(spec, n_fft, axis=-1) * _hann(n_fft), hop)
    start = n_fft // 2
    return y[start : start + length] * _inverse_window_sum(n_fft, hop, len(spec))[start : start + length]


@lru_cache(maxsize=64)
def _inverse_window_sum(n_fft: int, hop: int, num_frames: int) -> np.ndarray:
    """1 / sum of squared windows overlapping each output sample (guarded at the edges)."""
    norm = _overlap_add(np.tile(_hann(n_fft) ** 2, (num_frames, 1)), hop)
    return 1 / np.maximum(norm, 1e-3)


def _match_energy(y: np.ndarray, reference: np.ndarray, hop: int = HOP) -> np.ndarray:
    """Give y the short-time energy contour of `reference` (a vocoder's energy parameter)."""
    frame_rms = [np.sqrt(np.mean((_frames(s, 2 * hop, hop) * _hann(2 * hop)) ** 2, axis=1)) for s in (y, reference)]
    gain = frame_rms[1] / (frame_rms[0] + 1e-4 * frame_rms[1].max() + 1e-12)
    return y * np.interp(np.arange(len(y)), np.arange(len(gain)) * hop, gain)


@lru_cache(maxsize=4)
def _mel_basis(num_mels: int, n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangular HTK-mel filterbank (mels, bins) over 0–8 kHz and its pseudo-inverse (bins, mels)."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(0, mel(SAMPLE_RATE / 2), num_mels + 2) / 2595) - 1)  # Hz
    freqs = fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    basis = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return basis, np.linalg.pinv(basis)


def _griffin_lim(
    mag: np.ndarray, n_fft: int, hop: int, length: int, iters: int, momentum: float, rng: np.random.Generator
) -> np.ndarray:
    """(Fast) Griffin–Lim phase reconstruction from a magnitude spectrogram (f, bins), random initial phase.

    The loop stays in the zero-padded coordinates of `_frames` (what `_stft` ∘ `_istft` computes, without copies).
    """
    mag = mag.astype(np.float32)
    window, start = _hann(n_fft), n_fft // 2
    inverse_norm = _inverse_window_sum(n_fft, hop, len(mag)).astype(np.float32)
    inverse_norm[:start] = inverse_norm[start + length :] = 0  # the signal is zero outside its support
    angles = np.exp(2j * np.pi * rng.random(mag.shape, dtype=np.float32))
    previous = np.zeros_like(angles)
    for _ in range(iters):
        padded = _overlap_add(fft.irfft(mag * angles, n_fft, axis=-1) * window, hop) * inverse_norm
        rebuilt = fft.rfft(sliding_window_view(padded, n_fft)[::hop] * window, axis=-1)
        angles = rebuilt - np.float32(momentum / (1 + momentum)) * previous if momentum else rebuilt
        angles /= np.abs(angles) + np.float32(1e-16)
        previous = rebuilt
    return _istft(mag * angles, n_fft, hop, length)


def _estimate_f0(x: np.ndarray, hop: int = HOP) -> tuple[np.ndarray, np.ndarray]:
    """Frame-wise F0 (Hz) and voicing from the window-corrected normalised autocorrelation, 70–400 Hz."""
    size, lag_lo, lag_hi = 1024, SAMPLE_RATE // 400, SAMPLE_RATE // 70
    frames = _frames(x, size, hop) * _hann(size)  # (f, size)
    ac = fft.irfft(np.abs(fft.rfft(frames, 2 * size)) ** 2)[:, : lag_hi + 1]  # (f, lags)
    ac_window = fft.irfft(np.abs(fft.rfft(_hann(size), 2 * size)) ** 2)[: lag_hi + 1]
    energy = ac[:, 0]
    ac = ac / (energy[:, None] + 1e-12) / (ac_window / ac_window[0])
    lags = np.arange(lag_lo, lag_hi + 1)
    seg = ac[:, lag_lo:] * (1 - 0.15 * lags / lag_hi)  # slight bias to short lags against octave errors
    best = seg.argmax(axis=1)
    voiced = (seg.max(axis=1) > 0.45) & (energy > 1e-3 * energy.max())
    f0 = medfilt(SAMPLE_RATE / lags[best], 5)
    return f0, voiced


# ---------------------------------------------------------------------------------------------------------------
# attack systems: (audio, rng) -> audio of the same length


def griffin_lim_mel80(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A01: Griffin–Lim (32 fast iterations) from an 80-band mel spectrogram inverted by pseudo-inverse."""
    n_fft, hop = 1024, 256
    basis, inverse = _mel_basis(80, n_fft)
    mel = np.abs(_stft(audio, n_fft, hop)) @ basis.T  # (f, 80)
    mag = np.maximum(mel @ inverse.T, 0)  # (f, bins), over-smoothed
    return _griffin_lim(mag, n_fft, hop, len(audio), iters=32, momentum=0.99, rng=rng)


def phase_randomisation(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A02: STFT magnitude kept, phase replaced by uniform random phase, weighted overlap-add."""
    n_fft, hop = 512, 128
    mag = np.abs(_stft(audio, n_fft, hop))
    return _istft(mag * np.exp(2j * np.pi * rng.random(mag.shape)), n_fft, hop, len(audio))


def unit_concatenation(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A03: 20–60 ms units copied, repeated or dropped, joined by 4 ms overlap-add with small gain mismatches."""
    n, fade = len(audio), 64
    out = np.zeros(n + SAMPLE_RATE)
    ramp = np.linspace(0, 1, fade)
    written = cursor = 0
    while written < n:
        length = int(rng.integers(320, 961))
        start = max(0, min(cursor, n - length - fade))
        unit = audio[start : start + length + fade] * 10 ** (rng.normal(0, 1.0) / 20)  # ±1 dB join mismatch
        unit[:fade] *= ramp
        unit[-fade:] *= ramp[::-1]
        out[written : written + len(unit)] += unit
        written += length
        u = rng.random()
        cursor += 0 if u < 0.15 else 2 * length if u < 0.3 else length  # repeat, drop the next unit, or go on
    return out[:n]


def telephone_codec(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A04: band-limited to 4 kHz (8 kHz resampling) with 8-bit mu-law quantisation."""
    narrow = resample_poly(audio, 1, 2)  # anti-aliasing low-pass at 4 kHz
    peak = np.abs(narrow).max() * rng.uniform(1.0, 1.2) + 1e-12
    mu = 255.0
    compressed = np.sign(narrow / peak) * np.log1p(mu * np.abs(narrow / peak)) / np.log1p(mu)
    quantised = np.round((compressed + 1) / 2 * mu) / mu * 2 - 1  # 256 levels
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu * peak
    return resample_poly(expanded, 2, 1)[: len(audio)]


def harmonic_vocoder(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A05: harmonic-plus-noise re-synthesis from F0 and a cepstrally smoothed envelope, random harmonic phases."""
    n, n_fft, table = len(audio), 1024, 2048
    f0, voiced = _estimate_f0(audio)
    log_mag = np.log(np.abs(_stft(audio, n_fft, HOP)) + 1e-6)  # (f, bins)
    peak_width = int(np.median(f0[voiced]) / SAMPLE_RATE * n_fft) if voiced.any() else 8
    log_mag = maximum_filter1d(log_mag, max(peak_width, 1), axis=1)  # ride on the harmonic peaks
    cepstrum = fft.irfft(log_mag, n_fft)
    cepstrum[:, 30 : n_fft - 29] = 0  # keep 30 quefrencies: over-smoothed envelope
    envelope = np.exp(fft.rfft(cepstrum, n_fft).real)  # (f, bins), ≈ |STFT| at the peaks
    max_voiced = rng.uniform(4000, 6000)  # harmonics below, noise above (HNM's maximum voiced frequency)
    # one period per frame as a wavetable: sum_k A_k cos(k θ + ψ_k); a sine of amplitude A peaks at A·Σw/2 = 512 A
    harmonics = np.arange(1, table // 2)  # (h,)
    bins = np.clip(np.round(harmonics[None, :] * f0[:, None] / SAMPLE_RATE * n_fft).astype(int), 0, n_fft // 2)
    amps = np.take_along_axis(envelope, bins, axis=1) / 512 * (harmonics[None, :] * f0[:, None] < max_voiced)
    spectrum = np.zeros((len(f0), table // 2 + 1), np.complex128)
    spectrum[:, 1 : table // 2] = amps * voiced[:, None] * np.exp(1j * rng.uniform(0, 2 * np.pi, harmonics.size))
    tables = fft.irfft(spectrum * table / 2, table)  # (f, table)
    position = (np.cumsum(np.interp(np.arange(n) / HOP, np.arange(len(f0)), f0)) / SAMPLE_RATE % 1) * table
    frame = np.arange(n) / HOP
    i, w = frame.astype(int), frame % 1  # crossfade the tables of the two neighbouring frames
    j, u = position.astype(int), position % 1
    read = lambda f: tables[f, j] * (1 - u) + tables[f, (j + 1) % table] * u  # noqa: E731
    harmonic = read(i) * (1 - w) + read(np.minimum(i + 1, len(f0) - 1)) * w
    noisy = ~voiced[:, None] | (fft.rfftfreq(n_fft, 1 / SAMPLE_RATE) >= max_voiced)  # (f, bins)
    noise = _stft(rng.standard_normal(n), n_fft, HOP) * envelope * noisy / np.sqrt(384)  # |white STFT| ≈ √Σw²
    return _match_energy(harmonic + _istft(noise, n_fft, HOP, n), audio)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials a (frames, order + 1), a[:, 0] = 1, from autocorrelations r (frames, >= order + 1)."""
    a = np.zeros((len(r), order + 1))
    a[:, 0] = 1.0
    err = r[:, 0] * (1 + 1e-6) + 1e-12  # white-noise correction keeps the recursion stable
    for i in range(1, order + 1):
        k = -(r[:, i] + np.sum(a[:, 1:i] * r[:, i - 1 : 0 : -1], axis=1)) / err
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = k
        err = err * (1 - k**2)
    return a


def lpc_vocoder(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A06: order-18 LPC vocoder, pulse-train (voiced) or white-noise (unvoiced) excitation, binary voicing."""
    n, order = len(audio), 18
    frames = _frames(audio, 512, HOP) * _hann(512)
    r = fft.irfft(np.abs(fft.rfft(frames, 1024)) ** 2)[:, : order + 1].astype(np.float64)  # (f, order + 1)
    a = _levinson(r, order)
    response = 1 / fft.rfft(a, FILTER_FFT)  # all-pole synthesis filter, (f, k)
    f0, voiced = _estimate_f0(audio)
    f0_s = np.interp(np.arange(n) / HOP, np.arange(len(f0)), f0)
    cycle = (np.cumsum(f0_s) / SAMPLE_RATE + rng.random()).astype(np.int64)
    pulses = np.diff(cycle, prepend=cycle[0]) * np.sqrt(SAMPLE_RATE / f0_s)  # unit-power impulse train
    voiced_s = voiced[np.round(np.arange(n) / HOP).astype(int)]
    excitation = np.where(voiced_s, pulses, rng.standard_normal(n))
    return _match_energy(_framewise_filter(excitation, response), audio)


def coarse_griffin_lim(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A07: 8 plain Griffin–Lim iterations from a temporally smoothed 40-band mel spectrogram."""
    n_fft, hop = 1024, 256
    basis, inverse = _mel_basis(40, n_fft)
    mel = uniform_filter1d(np.abs(_stft(audio, n_fft, hop)) @ basis.T, 3, axis=0)  # (f, 40), over-smoothed
    mag = np.maximum(mel @ inverse.T, 0)
    return _griffin_lim(mag, n_fft, hop, len(audio), iters=8, momentum=0.0, rng=rng)


def channel_vocoder(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A08: 16-channel mel vocoder, mixed excitation (zero-phase pulses below a voicing cut-off, noise above)."""
    n, n_fft = len(audio), 512
    freqs = fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)  # (bins,) Hz
    basis, _ = _mel_basis(16, n_fft)  # (16, bins)
    band_power = np.abs(_stft(audio, n_fft, HOP)) ** 2 @ basis.T / basis.sum(axis=1)  # (f, 16)
    weights = basis / np.maximum(basis.sum(axis=0), 1e-3)  # (16, bins): a bin mixes the bands that cover it
    gain = np.sqrt(band_power) @ weights  # (f, bins), stepped between band centres
    gain[:, freqs < 60] = 0  # channels from 60 Hz: no DC from the pulse train
    f0, voiced = _estimate_f0(audio)
    f0 = np.maximum(uniform_filter1d(medfilt(f0, 9), 9), 60.0)  # stylised pitch: no jitter, smoothed contour
    f0_s = np.interp(np.arange(n) / HOP, np.arange(len(f0)), f0)
    cycle = (np.cumsum(f0_s) / SAMPLE_RATE + rng.random()).astype(np.int64)
    pulses = np.diff(cycle, prepend=cycle[0]) * np.sqrt(SAMPLE_RATE / f0_s)  # unit-power impulse train
    cutoff = rng.uniform(2500, 5000)  # voicing cut-off (Hz): pulses below, noise above in voiced frames
    pulse_bins = voiced[:, None] & (freqs < cutoff)  # (f, bins)
    excitation = np.where(pulse_bins, _stft(pulses, n_fft, HOP), _stft(rng.standard_normal(n), n_fft, HOP))
    excitation /= np.sqrt(np.sum(_hann(n_fft) ** 2))  # unit-power input -> |STFT| ~ 1 per bin
    return _match_energy(_istft(excitation * gain, n_fft, HOP, n), audio)


Attack = Callable[[np.ndarray, np.random.Generator], np.ndarray]
ATTACKS: dict[str, Attack] = {
    "A01": griffin_lim_mel80,
    "A02": phase_randomisation,
    "A03": unit_concatenation,
    "A04": telephone_codec,
    "A05": harmonic_vocoder,
    "A06": lpc_vocoder,
    "A07": coarse_griffin_lim,
    "A08": channel_vocoder,
}
ATTACK_IDS: tuple[str, ...] = ("-", *ATTACKS)  # index 0 = bona fide


def attack_description(attack_id: str) -> str:
    """One-line description of an attack system (the first line of its docstring)."""
    return (ATTACKS[_check_attack(attack_id)].__doc__ or "").strip().splitlines()[0]


def _check_attack(attack_id: str) -> str:
    if attack_id not in ATTACKS:
        raise ValueError(f"unknown attack id {attack_id!r}: known attacks are {tuple(ATTACKS)}")
    return attack_id


def apply_attack(attack_id: str, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pass a bona fide utterance through attack system `attack_id`; float32, same length, finite."""
    x = np.asarray(audio, dtype=np.float64)
    y = ATTACKS[_check_attack(attack_id)](x, rng)
    y = np.pad(y[: len(x)], (0, max(0, len(x) - len(y))))
    return np.nan_to_num(y).astype(np.float32)


def postprocess(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Channel shared by both classes: random DC-free high-pass, loudness normalisation, white channel noise."""
    b, a = butter(2, rng.uniform(40, 150), btype="highpass", fs=SAMPLE_RATE)
    y = lfilter(b, a, audio.astype(np.float64))
    y *= 10 ** (rng.uniform(-32, -20) / 20) / (np.sqrt(np.mean(y**2)) + 1e-12)
    y += 10 ** (rng.uniform(-75, -60) / 20) * rng.standard_normal(len(y))
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# the corpus: spec, splits, files


@dataclass(frozen=True)
class SpoofSynthSpec:
    """Everything that determines a generated split besides its size and seed; hashed into the file name."""

    min_seconds: float = 2.5
    max_seconds: float = 4.5
    bonafide_fraction: float = 0.2  # share of bona fide clips in every split (ASVspoof LA: ~10 %)
    train_attacks: tuple[str, ...] = ("A01", "A02", "A03", "A04")
    test_attacks: tuple[str, ...] = ("A01", "A02", "A05", "A06", "A07")
    val_attacks: tuple[str, ...] | None = None  # None: the training attacks
    num_speakers_train: int = 20
    num_speakers_val: int = 10
    num_speakers_test: int = 10

    def __post_init__(self) -> None:
        for name in ("train_attacks", "test_attacks", "val_attacks"):
            if name == "val_attacks" and self.val_attacks is None:
                continue
            ids = tuple(str(a) for a in getattr(self, name))  # lists from Hydra become tuples
            object.__setattr__(self, name, ids)
            unknown = [a for a in ids if a not in ATTACKS]
            if unknown or not ids or len(set(ids)) != len(ids):
                raise ValueError(
                    f"{name}={ids}: need distinct known attack ids; unknown: {unknown}, known: {tuple(ATTACKS)}"
                )
        if not 0.1 <= self.min_seconds <= self.max_seconds:
            raise ValueError(f"min_seconds={self.min_seconds}, max_seconds={self.max_seconds}: need 0.1 <= min <= max")
        if not 0.0 <= self.bonafide_fraction <= 1.0:
            raise ValueError(f"bonafide_fraction={self.bonafide_fraction}: must lie in [0, 1]")
        for split in SPLITS:
            if self.num_speakers(split) < 1:
                raise ValueError(f"num_speakers_{split}={self.num_speakers(split)}: need at least one speaker")

    def attacks(self, split: str) -> tuple[str, ...]:
        """Attack systems used in `split`: train's, val's (train's unless `val_attacks` is set) and test's."""
        index = _split_index(split)
        if index == 1 and self.val_attacks is not None:
            return self.val_attacks
        return self.test_attacks if index == 2 else self.train_attacks

    def num_speakers(self, split: str) -> int:
        return int(getattr(self, f"num_speakers_{SPLITS[_split_index(split)]}"))


def _split_index(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    return SPLITS.index(split)


def split_speakers(spec: SpoofSynthSpec, split: str, seed: int) -> tuple[Speaker, ...]:
    """The split's speaker pool; ids are offset per split, so pools are disjoint."""
    base = SPEAKER_ID_OFFSET * _split_index(split)
    return tuple(Speaker.from_id(base + j, seed) for j in range(spec.num_speakers(split)))


def clip_plan(spec: SpoofSynthSpec, split: str, num_clips: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Attack index (into ATTACK_IDS) and speaker position of every clip: exactly round(fraction * n) bona fide,
    spoofs spread evenly over the split's attacks, speakers round-robin; both shuffled deterministically."""
    rng = np.random.default_rng([seed, 0x5EED, _split_index(split)])
    num_bonafide = int(round(spec.bonafide_fraction * num_clips))
    attack_idx = [ATTACK_IDS.index(a) for a in spec.attacks(split)]
    attack = np.concatenate(
        [np.zeros(num_bonafide, np.int8), np.resize(np.array(attack_idx, np.int8), num_clips - num_bonafide)]
    )
    speaker = np.arange(num_clips) % spec.num_speakers(split)
    return rng.permutation(attack), rng.permutation(speaker)


def render_clip(spec: SpoofSynthSpec, rng: np.random.Generator, speaker: Speaker, attack: int) -> np.ndarray:
    """One clip: a fresh utterance of random duration, attacked unless bona fide (attack 0), then the channel."""
    audio = synthesize_utterance(rng, speaker, rng.uniform(spec.min_seconds, spec.max_seconds))
    if attack:
        audio = apply_attack(ATTACK_IDS[attack], audio, rng)
    return postprocess(audio, rng)


def split_params(spec: SpoofSynthSpec, split: str, num_clips: int, seed: int) -> dict:
    """What determines a split's file. `val_attacks` only enters the val split's, and only when set: the other splits
    (and val files written with the training attacks, before the option existed) keep their names."""
    params = asdict(spec)
    val_attacks = params.pop("val_attacks")
    if split == "val" and val_attacks is not None:
        params["val_attacks"] = val_attacks
    return {**params, "split": split, "num_clips": num_clips, "seed": seed, "version": GENERATOR_VERSION}


def split_path(data_dir: str | Path, spec: SpoofSynthSpec, split: str, num_clips: int, seed: int) -> Path:
    """File of one split; the parameter hash is in the name, so changing a parameter never overwrites a file."""
    digest = params_hash(split_params(spec, split, num_clips, seed))
    return Path(data_dir) / f"spoof_synth_{split}_{num_clips}_{digest}.h5"


def _render_job(job: tuple[SpoofSynthSpec, str, int, int, Speaker, int]) -> np.ndarray:
    """Clip i of a split as int16 (clipped to the int16 range), from its own random stream."""
    spec, split, seed, i, speaker, attack = job
    audio = render_clip(spec, np.random.default_rng([seed, _split_index(split), i]), speaker, attack)
    return np.clip(np.round(audio * 32768), -32768, 32767).astype(np.int16)


def _one_blas_thread() -> None:
    """Pool initialiser: one BLAS thread per worker process."""
    threadpool_limits(1)


def _default_workers(num_clips: int) -> int:
    """Processes for a split: the usable cores (at most 8) when forking is available and the split is not tiny."""
    if num_clips < 64 or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(usable_cores(), 8))


def write_split(
    data_dir: str | Path,
    spec: SpoofSynthSpec,
    split: str,
    num_clips: int,
    seed: int,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Generate one split into `data_dir` unless a matching file is already there; returns its path.

    Clips are rendered in `workers` forked processes (default: the usable cores, serial for tiny splits); every clip
    has its own random stream, so the file is the same whatever the number of workers.
    """
    path = split_path(data_dir, spec, split, num_clips, seed)

    def write(f: h5py.File) -> None:
        attack, speaker_pos = clip_plan(spec, split, num_clips, seed)
        speakers = split_speakers(spec, split, seed)
        jobs = [(spec, split, seed, i, speakers[speaker_pos[i]], int(attack[i])) for i in range(num_clips)]
        num_workers = _default_workers(num_clips) if workers is None else workers
        bar = dict(total=num_clips, desc=f"spoof_synth {split}", unit="clip", disable=not progress, leave=False)
        with threadpool_limits(1):  # small matrices: extra BLAS threads only spin and steal the workers' cores
            if num_workers > 1:
                with mp.get_context("fork").Pool(num_workers, initializer=_one_blas_thread) as pool:
                    clips = list(tqdm(pool.imap(_render_job, jobs, chunksize=4), **bar))
            else:
                clips = list(tqdm(map(_render_job, jobs), **bar))
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        f["audio"] = np.concatenate(clips) if clips else np.zeros(0, np.int16)
        f["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        f["label"] = (attack == 0).astype(np.int8)
        f["attack"] = attack.astype(np.int8)
        f["speaker"] = np.array([speakers[p].speaker_id for p in speaker_pos], dtype=np.int32)
        f.attrs["attack_ids"] = json.dumps(ATTACK_IDS)
        f.attrs["sample_rate"] = SAMPLE_RATE

    return ensure_generated(path, split_params(spec, split, num_clips, seed), write, KEYS)


@dataclass(frozen=True, eq=False)
class SpoofClips:
    """A split in memory: clips concatenated in `audio` (int16), clip i is audio[offsets[i]:offsets[i + 1]]."""

    audio: np.ndarray  # (total,) int16
    offsets: np.ndarray  # (n + 1,) int64
    label: np.ndarray  # (n,) int8, 1 = bona fide, 0 = spoof
    attack: np.ndarray  # (n,) int8, index into ATTACK_IDS
    speaker: np.ndarray  # (n,) int32

    def clip(self, i: int) -> np.ndarray:
        """Clip i as float32 in [-1, 1)."""
        return self.audio[self.offsets[i] : self.offsets[i + 1]].astype(np.float32) / 32768

    def __len__(self) -> int:
        return len(self.label)


def read_split(path: str | Path) -> SpoofClips:
    """Read and validate a split file; raises `DataFileError` naming the file and the offending key."""
    arrays = read_arrays(path, KEYS)
    n = len(arrays["label"])

    def require(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise DataFileError(f"{path}: dataset '{key}' {what}")

    for key, dtype in zip(KEYS, (np.int16, np.int64, np.int8, np.int8, np.int32), strict=True):
        require(arrays[key].ndim == 1 and arrays[key].dtype == dtype, key, f"must be 1-D {np.dtype(dtype).name}")
    offsets, attack = arrays["offsets"], arrays["attack"]
    require(len(offsets) == n + 1, "offsets", f"has {len(offsets)} entries, expected {n + 1} (clips + 1)")
    require(offsets[0] == 0 and bool(np.all(np.diff(offsets) > 0)), "offsets", "must start at 0 and increase")
    require(offsets[-1] == len(arrays["audio"]), "offsets", f"ends at {offsets[-1]}, audio has {len(arrays['audio'])}")
    require(len(attack) == n and len(arrays["speaker"]) == n, "attack", f"and 'speaker' must have {n} entries")
    require(bool(np.all((attack >= 0) & (attack < len(ATTACK_IDS)))), "attack", f"must index {ATTACK_IDS}")
    require(bool(np.all((attack == 0) == (arrays["label"] == 1))), "label", "disagrees with 'attack' (0 <=> bona fide)")
    return SpoofClips(**arrays)
