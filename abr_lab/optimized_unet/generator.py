"""A physiologically grounded ABR simulator: patients, threshold searches, waves I–V, averaged EEG noise, Fmp.

Every label is physically true: a wave is marked present exactly when the simulated ear produces it, the threshold
is the ear's own, and the noise is what averaging N sweeps leaves. Figures come from `ABR_PHYSIOLOGY.md` (normative
latencies, maturation, level/rate/sex effects, class effects, residual noise, Fmp); each constant below names its
source figure. Near threshold the response is a few tens of nV against a similar residual noise: hard to see, as in
a clinic.

The pipeline, per patient:

1. draw age (mostly infants), sex, class, stimulus rate, EEG level; per ear a threshold and class parameters;
2. run a clinical threshold search (descend from `start_level_db` in `level_step_db` steps until wave V is gone,
   or ascend to `max_level_db` when it is absent at the start; bracket with a half step; replicate the recordings
   at the lowest present and the highest absent level);
3. for each recording, compute the waves' latencies, amplitudes and widths, synthesise the clean waveform
   (waves, the SN10-like trough after V, the residual cochlear microphonic) and add averaged coloured EEG noise,
   optional line hum and artefacts; compute Fmp from the sweeps' statistics.

Patients are drawn so that the *recording-level* class shares match `class_prevalence` (the clinical data report
recording shares, and series lengths differ by class: a profound ear yields a few recordings, a normal ear a dozen).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from abr_lab.data import ensure_generated, params_hash
from abr_lab.optimized_unet.schema import CLASS_NAMES, REQUIRED_KEYS, ABRRecords, write_records

GENERATOR_VERSION = 1  # bump when the physics changes, so cached files are not reused
NORMAL, NEUROPATHY, SENSORINEURAL, TOTAL, CONDUCTIVE = range(5)
MIN_LEVEL_DB = 0.0  # a threshold search does not go below 0 dB nHL
REFERENCE_LEVEL_DB = 80.0  # normative latencies are quoted at 80 dB nHL
REFERENCE_RATE = 11.1  # ... and at ~10 clicks/s

# Wave latencies (ms) at 80 dB nHL, ~10/s, for waves I, II, III, IV, V. Adult: textbook I 1.5–1.7, III 3.5–3.9,
# V 5.5–5.8. Term neonate: I 1.79, III 4.54, V 6.75 (Arq Neuropsiquiatr 2003). II and IV sit between their
# neighbours (IV just before V: the IV–V complex).
LATENCY_ADULT = np.array([1.60, 2.70, 3.70, 4.90, 5.65])
LATENCY_NEONATE = np.array([1.79, 3.10, 4.54, 6.00, 6.75])
# Maturation time constants (years): wave I is mature early; III and V shorten over the first ~18–24 months.
MATURATION_YEARS = np.array([0.15, 0.35, 0.45, 0.45, 0.45])
# Peak amplitudes (µV) at high sensation level: adult V 0.2–0.6, I 0.1–0.4 (V/I > 0.5); neonates: V smaller
# relative to I. II and IV are small shoulders.
AMPLITUDE_ADULT = np.array([0.25, 0.08, 0.25, 0.20, 0.40])
AMPLITUDE_NEONATE = np.array([0.26, 0.07, 0.19, 0.14, 0.27])
# Each wave needs this much sensation level (dB) to appear: V is the last to vanish as level falls.
WAVE_SL_OFFSET_DB = np.array([20.0, 15.0, 10.0, 5.0, 0.0])
# Pulse widths (Gaussian sigma, ms); broader near threshold and in infants.
WIDTH_MS = np.array([0.22, 0.22, 0.28, 0.28, 0.35])
# Rate effect: 10 -> 100 clicks/s delays V by ~0.5 ms (larger in neonates); earlier waves move less.
RATE_DELAY_MS_PER_DECADE = 0.5 * np.array([0.2, 0.4, 0.6, 0.8, 1.0])
# Females have ~0.25 ms shorter wave V (adults); earlier waves differ less.
FEMALE_SHIFT_MS = -0.25 * np.array([0.2, 0.4, 0.5, 0.8, 1.0])
TRACKED = np.array([0, 2, 4])  # waves I, III, V: the labelled peaks
NEAR_THRESHOLD_DELAY_MS = 0.6  # extra delay at threshold (latency–intensity function steepens near threshold)
NEAR_THRESHOLD_DB = 8.0  # ... decaying over this many dB of sensation level
AMPLITUDE_GROWTH_DB = 25.0  # amplitude reaches 63 % of its maximum this many dB above a wave's own threshold
WINDOW_FMP_MS = (1.0, 11.0)  # Fmp: ~10 ms analysis window after the click
RESPONSE_BAND_HZ = (100.0, 3000.0)  # band-pass of the recording: the residual EEG noise lives in this band


@dataclass(frozen=True)
class SimulatorSpec:
    """Everything that determines a simulated dataset; hashed into the file name.

    Args:
        num_patients: patients (each gives two ears × a level series; ~23 recordings per patient by default).
        seed: generator seed; the same spec and seed give the same file, bit for bit.
        fs_hz, duration_ms: the time axis (onset 0 = the click); any length works downstream.
        class_prevalence: recording-level shares of NORMAL, NEUROPATHY, SENSORINEURAL, TOTAL, CONDUCTIVE (the
            clinical data's by default); normalised to sum to 1.
        age_mix: shares of infants (0–2 y), children (2–18 y) and adults (18–80 y).
        rates: stimulus rates (/s) a patient may be tested at (one per patient).
        start_level_db, level_step_db, max_level_db: the threshold search (dB nHL).
        latency_slope_ms_per_db: wave latency growth per dB of level decrease over the mid range (0.03–0.04).
        sweeps: range of the number of averaged sweeps per recording.
        eeg_noise_uv: single-sweep EEG noise in the response band (µV, ~1.5; infants asleep ×0.8).
        extra_waves: also synthesise waves II and IV (never labelled).
        hum_probability: share of recordings with residual 50 Hz line hum.
        artefact_probability: share of recordings with an unrejected movement/myogenic transient.
    """

    num_patients: int = 2000
    seed: int = 0
    fs_hz: float = 20000.0
    duration_ms: float = 15.0
    class_prevalence: tuple[float, ...] = (0.797, 0.008, 0.106, 0.033, 0.056)
    age_mix: tuple[float, ...] = (0.7, 0.15, 0.15)
    rates: tuple[float, ...] = (11.1, 21.1, 31.1, 39.1, 49.1)
    start_level_db: float = 80.0
    level_step_db: float = 10.0
    max_level_db: float = 100.0
    latency_slope_ms_per_db: float = 0.035
    sweeps: tuple[int, ...] = (1500, 4000)
    eeg_noise_uv: float = 1.5
    extra_waves: bool = False
    hum_probability: float = 0.2
    artefact_probability: float = 0.05

    def __post_init__(self) -> None:
        for name in ("class_prevalence", "age_mix", "rates"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        object.__setattr__(self, "sweeps", tuple(int(x) for x in self.sweeps))
        checks = {
            "num_patients": self.num_patients >= 1,
            "fs_hz": self.fs_hz >= 2 * RESPONSE_BAND_HZ[1],
            "duration_ms": self.duration_ms >= 2.0,
            "class_prevalence": len(self.class_prevalence) == len(CLASS_NAMES)
            and min(self.class_prevalence) >= 0
            and sum(self.class_prevalence) > 0,
            "age_mix": len(self.age_mix) == 3 and min(self.age_mix) >= 0 and sum(self.age_mix) > 0,
            "rates": len(self.rates) >= 1 and min(self.rates) > 0,
            "level_step_db": self.level_step_db > 0,
            "start_level_db": MIN_LEVEL_DB <= self.start_level_db <= self.max_level_db,
            "latency_slope_ms_per_db": self.latency_slope_ms_per_db >= 0,
            "sweeps": len(self.sweeps) == 2 and 2 <= self.sweeps[0] <= self.sweeps[1],
            "eeg_noise_uv": self.eeg_noise_uv >= 0,
            "hum_probability": 0 <= self.hum_probability <= 1,
            "artefact_probability": 0 <= self.artefact_probability <= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"simulator.{name}={getattr(self, name)!r} is out of range (see SimulatorSpec)")

    @classmethod
    def from_dict(cls, values: dict) -> SimulatorSpec:
        """Build from a config mapping, naming any unknown key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown simulator option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @property
    def num_samples(self) -> int:
        return int(round(self.duration_ms * self.fs_hz / 1000.0))

    def time_ms(self) -> np.ndarray:
        return 1000.0 * np.arange(self.num_samples) / self.fs_hz

    def params(self) -> dict:
        return {**asdict(self), "version": GENERATOR_VERSION}


# --------------------------------------------------------------------------------------------------------------
# Patients and ears


@dataclass
class Ears:
    """Per-ear draws (E ears; two per patient, patient p owns ears 2p and 2p+1)."""

    patient: np.ndarray  # (E,) patient index
    side: np.ndarray  # (E,) "L" / "R"
    age: np.ndarray  # (E,) years
    female: np.ndarray  # (E,) bool
    label: np.ndarray  # (E,) class index
    rate: np.ndarray  # (E,) clicks/s
    eeg_uv: np.ndarray  # (E,) single-sweep noise, µV
    threshold: np.ndarray  # (E,) hearing threshold, dB nHL (behavioural for neuropathy)
    gap: np.ndarray  # (E,) conductive air–bone gap, dB (0 otherwise)
    hf_delay: np.ndarray  # (E,) extra delay of a steep high-frequency loss, ms
    abnormal_v: np.ndarray  # (E,) neuropathy ear with a desynchronised late wave V at high levels
    offsets: np.ndarray  # (E, 5) individual latency offsets, ms
    amp_scale: np.ndarray  # (E,) individual amplitude scale
    cm_uv: np.ndarray  # (E,) cochlear microphonic left after alternating-polarity averaging, µV at 80 dB
    cm_freq: np.ndarray  # (E,) its frequency, Hz
    cm_decay_ms: np.ndarray  # (E,) its decay time constant, ms

    def take(self, index: np.ndarray) -> Ears:
        return Ears(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def draw_ages(rng: np.random.Generator, n: int, age_mix: tuple[float, ...]) -> np.ndarray:
    """Ages in years: infants skewed towards the first months (as in a referral clinic), children, adults."""
    group = rng.choice(3, size=n, p=np.asarray(age_mix) / sum(age_mix))
    u = rng.random(n)
    return np.select([group == 0, group == 1], [2.0 * u**2, 2.0 + 16.0 * u], 18.0 + 62.0 * u)


def draw_ears(spec: SimulatorSpec, rng: np.random.Generator, labels: np.ndarray) -> Ears:
    """Both ears of each patient whose class is `labels` (P,): thresholds and class parameters per ear."""
    p = len(labels)
    age = draw_ages(rng, p, spec.age_mix)
    female = rng.random(p) < 0.5
    rate = rng.choice(np.asarray(spec.rates), size=p)
    infant = age < 2.0
    eeg = spec.eeg_noise_uv * np.where(infant, 0.8, 1.0) * rng.lognormal(0.0, 0.2, p)  # asleep infants: less EEG
    # patient-level severity, then per-ear asymmetry
    base = np.select(
        [labels == NORMAL, labels == SENSORINEURAL, labels == CONDUCTIVE, labels == NEUROPATHY],
        [rng.uniform(0, 20, p), rng.uniform(30, 90, p), rng.uniform(0, 20, p), rng.uniform(0, 80, p)],
        rng.uniform(max(spec.max_level_db, 100.0) + 1.0, 125.0, p),  # TOTAL: no response at the maximum level
    )
    gap_patient = np.where(labels == CONDUCTIVE, rng.uniform(15, 50, p), 0.0)

    e = 2 * p
    rep = np.repeat(np.arange(p), 2)
    lab = labels[rep]
    spread = np.select([lab == SENSORINEURAL, lab == TOTAL], [7.0, 0.0], 3.0)
    threshold = base[rep] + rng.normal(0, 1, e) * spread
    threshold = np.select(
        [lab == NORMAL, lab == SENSORINEURAL], [threshold.clip(0, 25), threshold.clip(25, 95)], threshold.clip(0, 125)
    )
    gap = np.where(lab == CONDUCTIVE, (gap_patient[rep] + rng.normal(0, 5, e)).clip(10, 60), 0.0)
    threshold = threshold + gap  # conductive: the cochlea hears normally, the stimulus is attenuated by the gap
    # steep high-frequency losses delay V at all levels: ~0.1 ms per 10 dB of 4 kHz loss above 50 dB
    sloping = (lab == SENSORINEURAL) & (rng.random(e) < 0.5)
    hf_loss = threshold + rng.uniform(10, 30, e)
    hf_delay = np.where(sloping, 0.01 * np.maximum(hf_loss - 50.0, 0.0), 0.0)

    age_e = age[rep]
    spread_ms = 1.0 + 0.5 * np.exp(-age_e / 1.0)  # infants vary more
    i_lat = rng.normal(0, 0.10, e)
    i_iii = rng.normal(0, 0.12, e) * spread_ms
    iii_v = rng.normal(0, 0.12, e) * spread_ms
    offsets = np.stack([i_lat, i_lat + 0.5 * i_iii, i_lat + i_iii, i_lat + i_iii + 0.5 * iii_v, i_lat + i_iii + iii_v])
    cochlear = np.select([lab == TOTAL, lab == SENSORINEURAL], [0.0, np.clip(1 - threshold / 90.0, 0.1, 1)], 1.0)
    residual = rng.uniform(0.0, 0.15, e)  # alternating polarity cancels all but a fraction of the CM
    cm = np.where(lab == NEUROPATHY, rng.uniform(0.3, 0.6, e), rng.uniform(0.1, 0.3, e)) * residual * cochlear
    return Ears(
        patient=rep,
        side=np.tile(np.array(["L", "R"], dtype=object), p),
        age=age_e,
        female=female[rep],
        label=lab,
        rate=rate[rep],
        eeg_uv=eeg[rep],
        threshold=threshold,
        gap=gap,
        hf_delay=hf_delay,
        abnormal_v=(lab == NEUROPATHY) & (rng.random(e) < 0.4),
        offsets=offsets.T,
        amp_scale=rng.lognormal(0.0, 0.3, e),
        cm_uv=cm,
        cm_freq=rng.uniform(900, 2000, e),
        cm_decay_ms=np.where(lab == NEUROPATHY, rng.uniform(2.0, 4.0, e), rng.uniform(0.4, 1.0, e)),
    )


def wave_v_present(ears: Ears, level: np.ndarray | float) -> np.ndarray:
    """Whether each ear produces wave V at `level` (dB nHL): above threshold, or a neuropathic late V."""
    level = np.asarray(level, dtype=np.float64)
    neural = (ears.label != NEUROPATHY) & (level > ears.threshold)
    late = ears.abnormal_v & (level >= 70.0) & (level > ears.threshold + 30.0)
    return neural | late


def threshold_search(spec: SimulatorSpec, ears: Ears) -> tuple[np.ndarray, np.ndarray]:
    """The clinical level series of each ear: returns (ear index, level) per recording, in recording order.

    Descend from the start level while wave V is present; record the first absent level, bracket with a half
    step, and replicate the lowest present and highest absent levels. If V is absent at the start, ascend to the
    maximum level (replicating the maximum when nothing is found).
    """
    step, half = spec.level_step_db, spec.level_step_db / 2
    ear_index, levels = [], []
    for e in range(len(ears.label)):
        one = ears.take(np.array([e]))

        def present(level: float, one: Ears = one) -> bool:
            return bool(wave_v_present(one, level)[0])

        series: list[float] = []
        level = spec.start_level_db
        if present(level):
            while present(level) and level - step >= MIN_LEVEL_DB:
                series.append(level)
                level -= step
            series.append(level)
            if not present(level):  # bracketed: lowest present = level + step
                series += [level + half, level + step, level]
        else:
            while not present(level) and level + step <= spec.max_level_db:
                series.append(level)
                level += step
            series.append(level)
            if present(level):
                series += [level - half, level, level - step]
            else:
                series.append(level)
        ear_index += [e] * len(series)
        levels += series
    return np.asarray(ear_index, dtype=np.int64), np.asarray(levels, dtype=np.float64)


def patient_class_weights(spec: SimulatorSpec, pilot: int = 400) -> np.ndarray:
    """Patient-level class probabilities that give `class_prevalence` at recording level.

    A pilot of `pilot` patients per class (its own seed stream) measures each class's mean recordings per patient.
    """
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 99]))
    prevalence = np.asarray(spec.class_prevalence) / sum(spec.class_prevalence)
    per_patient = np.empty(len(CLASS_NAMES))
    for c in range(len(CLASS_NAMES)):
        ears = draw_ears(spec, rng, np.full(pilot, c))
        per_patient[c] = len(threshold_search(spec, ears)[0]) / pilot
    weights = prevalence / per_patient
    return weights / weights.sum()


# --------------------------------------------------------------------------------------------------------------
# Waves


@dataclass
class Waves:
    """Per-recording wave parameters (R recordings × 5 waves I–V)."""

    latency: np.ndarray  # (R, 5) ms
    amplitude: np.ndarray  # (R, 5) µV, 0 when absent
    width: np.ndarray  # (R, 5) ms
    present: np.ndarray  # (R, 5) bool


def wave_parameters(spec: SimulatorSpec, ears: Ears, level: np.ndarray, rng: np.random.Generator) -> Waves:
    """Latencies, amplitudes and widths of waves I–V for recordings of `ears` (one row each) at `level` (R,)."""
    r = len(level)
    age = ears.age[:, None]
    maturity = np.exp(-age / MATURATION_YEARS)  # (R, 5): 1 at birth, 0 when mature
    latency = LATENCY_ADULT + (LATENCY_NEONATE - LATENCY_ADULT) * maturity
    max_amp = AMPLITUDE_ADULT + (AMPLITUDE_NEONATE - AMPLITUDE_ADULT) * maturity

    lab = ears.label
    conductive = lab == CONDUCTIVE
    # The level the cochlea receives: a conductive ear loses the air-bone gap, which shifts the whole
    # latency-intensity function. A cochlear (sensorineural) loss keeps normal latencies at high levels
    # (recruitment), so its latency follows the presented level.
    effective = level - np.where(conductive, ears.gap, 0.0)
    sensation = level - ears.threshold  # dB above this ear's threshold
    slope = spec.latency_slope_ms_per_db
    level_delay = slope * (REFERENCE_LEVEL_DB - effective) + NEAR_THRESHOLD_DELAY_MS * np.exp(
        -np.maximum(sensation, 0.0) / NEAR_THRESHOLD_DB
    )
    decades = np.log10(ears.rate / REFERENCE_RATE)[:, None]
    rate_delay = RATE_DELAY_MS_PER_DECADE * decades * (1.0 + np.exp(-age / 1.0))  # larger in neonates
    sex_shift = np.where(ears.female[:, None], FEMALE_SHIFT_MS * (1.0 - np.exp(-age / 4.0)), 0.0)
    latency = (
        latency
        + level_delay[:, None]
        + rate_delay
        + sex_shift
        + ears.offsets
        + ears.hf_delay[:, None]
        + rng.normal(0, 0.03, (r, 5))
    )

    # Amplitude grows with sensation level above each wave's own threshold (I needs the most, V the least);
    # recruitment makes it grow faster in cochlear loss; faster rates shrink it.
    growth_db = np.where(lab == SENSORINEURAL, 0.5, 1.0)[:, None] * AMPLITUDE_GROWTH_DB
    above = sensation[:, None] - WAVE_SL_OFFSET_DB
    present = above > 0
    grow = np.where(present, 1.0 - np.exp(-np.maximum(above, 0.0) / growth_db), 0.0)
    rate_scale = (1.0 - 0.25 * decades).clip(0.5, 1.0)
    class_scale = np.where(lab == SENSORINEURAL, 0.8, 1.0)[:, None]
    amplitude = max_amp * grow * rate_scale * class_scale * ears.amp_scale[:, None]
    width = WIDTH_MS * (1.0 + 0.4 * np.exp(-np.maximum(sensation, 0.0) / 20.0))[:, None] * (1.0 + 0.3 * maturity)

    # Neuropathy: no synchronised neural response from wave I on; some ears show a small, late, broad V at
    # high levels (desynchronised).
    neuro = lab == NEUROPATHY
    present[neuro] = False
    amplitude[neuro] = 0.0
    late = wave_v_present(ears, level) & neuro
    if late.any():
        amplitude[late, 4] = 0.3 * max_amp[late, 4] * ears.amp_scale[late] * rng.uniform(0.5, 1.0, late.sum())
        latency[late, 4] += rng.uniform(1.5, 3.0, late.sum())
        width[late, 4] *= 2.5
        present[late, 4] = True
    if not spec.extra_waves:
        present[:, [1, 3]] = False
        amplitude[:, [1, 3]] = 0.0
    return Waves(latency=latency, amplitude=amplitude, width=width, present=present)


def synthesise_clean(spec: SimulatorSpec, waves: Waves, ears: Ears, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The noise-free response (R, T) and its neural part (R, T), µV: wave pulses, the trough after V, the CM."""
    t = spec.time_ms()[None, None, :]  # (1, 1, T)
    pulses = waves.amplitude[..., None] * np.exp(-0.5 * ((t - waves.latency[..., None]) / waves.width[..., None]) ** 2)
    neural = pulses.sum(axis=1)  # (R, T)
    # the slow negativity after V (SN10-like): broad and 1.3 ms later, so it barely moves V's peak
    v_lat, v_amp = waves.latency[:, 4:5], waves.amplitude[:, 4:5]
    neural -= 0.5 * v_amp * np.exp(-0.5 * ((t[0] - v_lat - 1.3) / 0.6) ** 2)
    # cochlear microphonic: ringing at the cochlea's frequency from ~0.3 ms, growing with the effective level
    tt = t[0] - 0.3
    effective = level - ears.gap
    cm_amp = ears.cm_uv * 10.0 ** ((effective - REFERENCE_LEVEL_DB) / 20.0)
    cm = (
        cm_amp[:, None]
        * np.sin(2 * np.pi * ears.cm_freq[:, None] * tt / 1000.0)
        * np.exp(-np.maximum(tt, 0.0) / ears.cm_decay_ms[:, None])
        * (tt > 0)
    )
    return neural + cm, neural


def coloured_noise(spec: SimulatorSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance Gaussian noise (n, T) with the residual EEG's spectrum: ~1/f, band-passed 100–3000 Hz."""
    t = spec.num_samples
    length = 2 * t  # generate twice as long and crop: no wrap-around correlation between the ends
    freqs = np.fft.rfftfreq(length, d=1.0 / spec.fs_hz)
    lo, hi = RESPONSE_BAND_HZ
    f = np.maximum(freqs, 1.0)
    gain = f**-0.5 / np.sqrt((1 + (lo / f) ** 4) * (1 + (f / hi) ** 8))  # pink, 2nd/4th-order band edges
    gain[0] = 0.0
    spectrum = (rng.normal(size=(n, freqs.size)) + 1j * rng.normal(size=(n, freqs.size))) * gain
    noise = np.fft.irfft(spectrum, n=length, axis=1)[:, :t]
    # std of the stationary process: irfft doubles every bin but DC and Nyquist, whose imaginary parts are dropped
    expected_std = np.sqrt(4 * (gain[1:-1] ** 2).sum() + gain[0] ** 2 + gain[-1] ** 2) / length
    return noise / expected_std


def artefacts(spec: SimulatorSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Residual stimulus artefact (always), 50 Hz hum and unrejected transients (sometimes), µV, (n, T)."""
    t = spec.time_ms()[None, :]
    stim = rng.lognormal(np.log(0.05), 0.5, (n, 1)) * np.exp(-t / 0.15) * np.cos(2 * np.pi * 5.0 * t)
    hum_on = rng.random((n, 1)) < spec.hum_probability
    hum = hum_on * rng.uniform(0.01, 0.05, (n, 1)) * np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    bump_on = rng.random((n, 1)) < spec.artefact_probability
    centre = rng.uniform(0, spec.duration_ms, (n, 1))
    bump = bump_on * rng.normal(0, 0.15, (n, 1)) * np.exp(-0.5 * ((t - centre) / rng.uniform(0.5, 2.0, (n, 1))) ** 2)
    return stim + hum + bump


def fmp(
    spec: SimulatorSpec, average: np.ndarray, sweeps: np.ndarray, eeg_uv: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Fmp = variance of the averaged waveform over the analysis window / (single-point variance / N).

    The single-point variance is what the device estimates from the N sweeps at one time point: σ² χ²(N-1)/(N-1),
    which is exactly the distribution of the sample variance of N simulated sweep values.
    """
    t = spec.time_ms()
    window = (t >= WINDOW_FMP_MS[0]) & (t < WINDOW_FMP_MS[1])
    var_window = average[:, window].var(axis=1)
    point_var = eeg_uv**2 * rng.chisquare(sweeps - 1) / (sweeps - 1)
    return var_window / (point_var / sweeps)


# --------------------------------------------------------------------------------------------------------------
# The dataset


@dataclass
class Simulation:
    """A simulated dataset and the hidden per-recording truth the file does not store (for tests and analysis)."""

    records: ABRRecords
    sensation_db: np.ndarray  # (R,) level - threshold
    gap_db: np.ndarray  # (R,) conductive air-bone gap
    sweeps: np.ndarray  # (R,) averaged sweeps
    residual_noise_uv: np.ndarray  # (R,) RMS of the averaged noise, µV
    neural: np.ndarray  # (R, T) neural part of the clean waveform


def simulate(spec: SimulatorSpec, progress: bool = False, chunk: int = 4096) -> Simulation:
    """Simulate the whole dataset described by `spec`, deterministically from `spec.seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0]))
    labels = rng.choice(len(CLASS_NAMES), size=spec.num_patients, p=patient_class_weights(spec))
    ears = draw_ears(spec, rng, labels)
    ear_index, level = threshold_search(spec, ears)
    rec = ears.take(ear_index)
    r, t = len(level), spec.num_samples

    waves = wave_parameters(spec, rec, level, rng)
    sweeps = rng.integers(spec.sweeps[0], spec.sweeps[1] + 1, r)
    residual = rec.eeg_uv / np.sqrt(sweeps)
    signal, clean, neural = (np.empty((r, t), np.float32) for _ in range(3))
    fmp_values = np.empty(r)
    bar = tqdm(total=r, desc="ABR simulator", unit="recording", disable=not progress, leave=False)
    for start in range(0, r, chunk):
        s = slice(start, min(start + chunk, r))
        part = Waves(*(getattr(waves, f.name)[s] for f in fields(Waves)))
        clean_s, neural_s = synthesise_clean(spec, part, rec.take(np.arange(s.start, s.stop)), level[s])
        noise = coloured_noise(spec, rng, s.stop - s.start) * residual[s, None]
        average = clean_s + noise + artefacts(spec, rng, s.stop - s.start)
        fmp_values[s] = fmp(spec, average, sweeps[s], rec.eeg_uv[s], rng)
        signal[s], clean[s], neural[s] = average, clean_s, neural_s
        bar.update(s.stop - s.start)
    bar.close()

    peaks = np.stack([waves.latency[:, TRACKED], waves.amplitude[:, TRACKED]], axis=-1)  # (R, 3, 2)
    # a wave past the end of the recorded window exists but cannot be read from this recording
    mask = waves.present[:, TRACKED] & (waves.latency[:, TRACKED] < spec.duration_ms)
    peaks[~mask] = 0.0
    records = ABRRecords(
        signal=signal,
        static=np.stack([rec.age, level, rec.rate, fmp_values], axis=1).astype(np.float32),
        peaks=peaks.astype(np.float32),
        peak_mask=mask,
        label=rec.label.astype(np.int64),
        threshold_db=rec.threshold.astype(np.float32),
        patient_id=np.array([f"P{p:05d}" for p in rec.patient], dtype=object),
        ear=rec.side,
        fs_hz=spec.fs_hz,
        onset_ms=0.0,
        clean=clean,
        sex=np.where(rec.female, "F", "M").astype(object),
    )
    return Simulation(records, level - rec.threshold, rec.gap, sweeps, residual, neural)


def simulated_path(data_dir: str | Path, spec: SimulatorSpec) -> Path:
    """File of a simulated dataset; the parameter hash is in the name, so a changed parameter never overwrites."""
    return Path(data_dir) / f"abr_sim_{spec.num_patients}p_{params_hash(spec.params())}.h5"


def write_simulation(data_dir: str | Path, spec: SimulatorSpec, progress: bool = True) -> Path:
    """Simulate into `data_dir` unless a file with these parameters is already there; returns its path."""

    def write(f: h5py.File) -> None:
        write_records(f, simulate(spec, progress=progress).records, source="simulator")

    return ensure_generated(simulated_path(data_dir, spec), spec.params(), write, (*REQUIRED_KEYS, "clean"))
