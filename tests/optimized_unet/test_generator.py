"""The ABR simulator obeys the physiology it claims (ABR_PHYSIOLOGY.md), deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from abr_lab.data import DataFileError
from abr_lab.optimized_unet import generator
from abr_lab.optimized_unet.generator import (
    CONDUCTIVE,
    NEUROPATHY,
    NORMAL,
    SENSORINEURAL,
    TOTAL,
    SimulatorSpec,
    coloured_noise,
    simulate,
    simulated_path,
    write_simulation,
)
from abr_lab.optimized_unet.schema import CLASS_NAMES, read_abr_file

ADULTS_ONE_RATE = {"age_mix": (0.0, 0.0, 1.0), "rates": (11.1,)}


def within_ear_slope(sim: generator.Simulation, select: np.ndarray) -> float:
    """Least-squares slope of wave V latency on level, pooled within ears (ms per dB)."""
    r = sim.records
    ear = np.char.add(r.patient_id.astype(str), r.ear.astype(str))[select]
    x, y = r.static[select, 1].astype(float), r.peaks[select, 2, 0].astype(float)
    for e in np.unique(ear):
        k = ear == e
        x[k] -= x[k].mean()
        y[k] -= y[k].mean()
    return float((x * y).sum() / (x * x).sum())


@pytest.fixture(scope="module")
def normal_adults() -> generator.Simulation:
    return simulate(SimulatorSpec(num_patients=120, seed=5, class_prevalence=(1, 0, 0, 0, 0), **ADULTS_ONE_RATE))


@pytest.fixture(scope="module")
def mixed() -> generator.Simulation:
    """All five classes in equal recording shares, default ages."""
    return simulate(SimulatorSpec(num_patients=300, seed=11, class_prevalence=(1, 1, 1, 1, 1)))


@pytest.mark.parametrize("slope", [0.035, 0.05])
def test_wave_v_latency_falls_with_level_at_the_configured_slope(slope: float) -> None:
    spec = SimulatorSpec(
        num_patients=80, seed=5, class_prevalence=(1, 0, 0, 0, 0), latency_slope_ms_per_db=slope, **ADULTS_ONE_RATE
    )
    sim = simulate(spec)
    mid_range = sim.records.peak_mask[:, 2] & (sim.sensation_db >= 30)  # away from the steeper near-threshold part
    assert within_ear_slope(sim, mid_range) == pytest.approx(-slope, rel=0.1)


def test_latency_steepens_near_threshold(normal_adults: generator.Simulation) -> None:
    present = normal_adults.records.peak_mask[:, 2]
    near = within_ear_slope(normal_adults, present & (normal_adults.sensation_db <= 25))
    mid = within_ear_slope(normal_adults, present & (normal_adults.sensation_db >= 30))
    assert near < mid < 0


def test_normative_latencies_maturation_and_sex() -> None:
    sim = simulate(SimulatorSpec(num_patients=400, seed=2, class_prevalence=(1, 0, 0, 0, 0), rates=(11.1,)))
    r = sim.records
    at_80 = (r.static[:, 1] == 80) & r.peak_mask[:, 2]
    age, v = r.static[:, 0], r.peaks[:, 2, 0]
    adult, neonate = at_80 & (age >= 18), at_80 & (age < 0.1)
    assert 5.3 < v[adult].mean() < 5.9  # textbook 5.5–5.8 ms
    assert 6.4 < v[neonate].mean() < 7.1  # term neonates 6.75 (SD 0.38) ms
    interpeak = r.peaks[:, 2, 0] - r.peaks[:, 0, 0]
    both = adult & r.peak_mask[:, 0]
    assert 3.7 < interpeak[both].mean() < 4.3  # I–V ≈ 3.8–4.2 ms
    female = r.sex == "F"
    assert v[adult & ~female].mean() - v[adult & female].mean() == pytest.approx(0.25, abs=0.12)


def test_conductive_loss_shifts_the_whole_latency_intensity_function() -> None:
    spec = SimulatorSpec(num_patients=240, seed=7, class_prevalence=(1, 0, 0, 0, 1), **ADULTS_ONE_RATE)
    sim = simulate(spec)
    r = sim.records
    both = (r.static[:, 1] == 80) & r.peak_mask[:, 0] & r.peak_mask[:, 2]
    normal, conductive = both & (r.label == NORMAL), both & (r.label == CONDUCTIVE)
    shift = r.peaks[conductive, 2, 0].mean() - r.peaks[normal, 2, 0].mean()
    expected = spec.latency_slope_ms_per_db * sim.gap_db[conductive].mean()
    assert shift == pytest.approx(expected, abs=0.15)
    interpeak = r.peaks[:, 2, 0] - r.peaks[:, 0, 0]
    assert abs(interpeak[conductive].mean() - interpeak[normal].mean()) < 0.1  # interpeak intervals normal


def test_conductive_is_later_than_sensorineural_20_db_above_threshold(mixed: generator.Simulation) -> None:
    r = mixed.records
    at_20 = r.peak_mask[:, 2] & (np.abs(mixed.sensation_db - 20) <= 5)
    conductive = r.peaks[at_20 & (r.label == CONDUCTIVE), 2, 0].mean()
    cochlear = r.peaks[at_20 & (r.label == SENSORINEURAL), 2, 0].mean()
    assert conductive - cochlear > 0.5  # ~1 ms in children (recruitment vs attenuation)


def test_no_waves_below_threshold_and_v_vanishes_last(mixed: generator.Simulation) -> None:
    r = mixed.records
    below = r.static[:, 1] < r.threshold_db
    assert below.any() and not r.peak_mask[below].any()
    assert np.abs(mixed.neural[below]).max() == 0.0
    neural = r.label != NEUROPATHY
    assert not (r.peak_mask[neural, 0] & ~r.peak_mask[neural, 2]).any()  # wave I never without V
    assert not (r.peak_mask[neural, 1] & ~r.peak_mask[neural, 2]).any()


def test_neuropathy_has_no_neural_waves_but_a_cochlear_microphonic(mixed: generator.Simulation) -> None:
    r = mixed.records
    neuro = r.label == NEUROPATHY
    assert neuro.sum() > 50
    assert not r.peak_mask[neuro, :2].any()  # absent from wave I on
    assert r.peak_mask[neuro, 2].mean() < 0.5  # at most a late, desynchronised V at high levels
    late = neuro & r.peak_mask[:, 2]
    normal_at_same = (r.label == NORMAL) & r.peak_mask[:, 2] & (r.static[:, 1] >= 70)
    assert r.peaks[late, 2, 0].mean() > r.peaks[normal_at_same, 2, 0].mean() + 1.0
    early = (r.time_ms() > 0.3) & (r.time_ms() < 3.0)
    cm = np.abs(r.clean[neuro][:, early] - mixed.neural[neuro][:, early]).max(axis=1)
    assert (cm > 0.005).mean() > 0.5  # the cochlea still rings
    total = r.label == TOTAL
    assert not r.peak_mask[total].any() and np.abs(r.clean[total]).max() == 0.0  # profound: nothing at all


def test_class_prevalence_matches_at_recording_level() -> None:
    spec = SimulatorSpec(num_patients=800, seed=3, duration_ms=4.0)
    labels = simulate(spec).records.label
    shares = np.bincount(labels, minlength=len(CLASS_NAMES)) / len(labels)
    target = np.asarray(spec.class_prevalence)
    assert np.abs(shares - target).max() < 0.03, dict(zip(CLASS_NAMES, shares.round(3), strict=True))


def test_fmp_is_higher_with_a_response(mixed: generator.Simulation) -> None:
    r = mixed.records
    fmp, present = r.static[:, 3], r.peak_mask[:, 2]
    assert 0.5 < np.median(fmp[~present]) < 1.5  # an F ratio near 1 when there is only noise
    assert np.median(fmp[present]) > 3.0 * np.median(fmp[~present])
    strong = present & (mixed.sensation_db >= 40) & (r.label == NORMAL)
    assert (fmp[strong] > 3.1).mean() > 0.9  # Fmp 3.1 ≈ 99 % confidence: clear responses pass it
    noise_only = ~present & (r.label != NEUROPATHY)  # a neuropathic ear's microphonic is a response to Fmp
    assert (fmp[noise_only] > 3.1).mean() < 0.05  # noise (with hum and artefacts) rarely passes


def test_residual_noise_and_difficulty_are_clinical(mixed: generator.Simulation) -> None:
    noise_nv = 1000 * mixed.residual_noise_uv
    assert 15 < np.median(noise_nv) < 45  # residual-noise targets: ~20 nV children, ~40 nV adults
    near = mixed.records.peak_mask[:, 2] & (mixed.sensation_db <= 10)
    snr = mixed.records.peaks[near, 2, 1] / mixed.residual_noise_uv[near]
    assert np.median(snr) < 4  # near threshold wave V is a few noise RMS tall: hard to see


def test_coloured_noise_has_unit_variance_and_lives_in_the_response_band() -> None:
    spec = SimulatorSpec()
    noise = coloured_noise(spec, np.random.default_rng(0), 4000)
    assert noise.std() == pytest.approx(1.0, rel=0.03)
    power = np.abs(np.fft.rfft(noise, axis=1)) ** 2
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / spec.fs_hz)
    in_band = (freqs >= 100) & (freqs <= 3000)
    assert power[:, in_band].sum() / power.sum() > 0.85


def test_deterministic_by_seed() -> None:
    spec = SimulatorSpec(num_patients=10, seed=4)
    a, b = simulate(spec).records, simulate(spec).records
    for key in ("signal", "clean", "static", "peaks", "peak_mask", "label", "threshold_db"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    c = simulate(SimulatorSpec(num_patients=10, seed=5)).records
    assert a.signal.shape != c.signal.shape or not np.array_equal(a.signal, c.signal)


def test_written_once_atomically_and_named_by_parameters(tmp_path, monkeypatch) -> None:
    spec = SimulatorSpec(num_patients=6, seed=1)
    path = write_simulation(tmp_path, spec, progress=False)
    assert path == simulated_path(tmp_path, spec)
    records = read_abr_file(path)
    assert records.clean is not None and records.fs_hz == spec.fs_hz and records.num_samples == 300
    mtime = path.stat().st_mtime_ns
    assert write_simulation(tmp_path, spec, progress=False) == path and path.stat().st_mtime_ns == mtime
    assert simulated_path(tmp_path, SimulatorSpec(num_patients=6, seed=2)) != path

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generator, "simulate", crash)
    other = SimulatorSpec(num_patients=6, seed=9)
    with pytest.raises(KeyboardInterrupt):
        write_simulation(tmp_path, other, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no half-written file, no temp left


def test_a_foreign_file_under_the_name_is_never_overwritten(tmp_path) -> None:
    spec = SimulatorSpec(num_patients=4, seed=1)
    path = simulated_path(tmp_path, spec)
    path.write_bytes(b"precious")
    with pytest.raises(DataFileError, match=str(path.name)):
        write_simulation(tmp_path, spec, progress=False)
    assert path.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_patient": 3}, "num_patient"),
        ({"class_prevalence": (1, 1)}, "class_prevalence"),
        ({"fs_hz": 1000}, "fs_hz"),
    ],
)
def test_bad_options_are_named(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulatorSpec.from_dict(values)
