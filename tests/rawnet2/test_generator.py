"""The spoof_synth generator: class balance, speaker pools, attack artefacts, no level shortcut, files."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from abr_lab.data import DataFileError
from abr_lab.rawnet2.generator import (
    ATTACK_IDS,
    ATTACKS,
    KEYS,
    SAMPLE_RATE,
    Speaker,
    SpoofSynthSpec,
    apply_attack,
    attack_description,
    read_split,
    render_clip,
    split_path,
    split_speakers,
    synthesize_utterance,
    write_split,
)

TINY = SpoofSynthSpec(min_seconds=0.5, max_seconds=0.8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny train and test splits, written once for the module."""
    root = tmp_path_factory.mktemp("spoof_synth")
    return {split: write_split(root, TINY, split, 12, seed=0, progress=False, workers=1) for split in ("train", "test")}


@pytest.fixture(scope="module")
def utterance():
    return synthesize_utterance(np.random.default_rng(0), Speaker.from_id(3, seed=0), 1.0)


def _band_energy(x: np.ndarray, lo: float, hi: float | None = None) -> float:
    """Share of the energy between lo and hi Hz."""
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(power[(freqs >= lo) & (freqs < (hi or np.inf))].sum() / power.sum())


def test_class_counts_attack_spread_and_durations(files):
    clips = read_split(files["train"])
    assert len(clips) == 12 and clips.label.sum() == round(0.2 * 12)  # exactly round(fraction * n) bona fide
    counts = np.bincount(clips.attack, minlength=len(ATTACK_IDS))
    assert counts[0] == 2 and sorted(counts[1:5]) == [2, 2, 3, 3] and counts[5:].sum() == 0
    seconds = np.diff(clips.offsets) / SAMPLE_RATE
    assert seconds.min() >= 0.5 - 1e-3 and seconds.max() <= 0.8 + 1e-3
    assert clips.clip(0).dtype == np.float32 and np.abs(clips.clip(0)).max() < 1
    with h5py.File(files["train"]) as f:
        assert json.loads(f.attrs["attack_ids"]) == list(ATTACK_IDS)


def test_test_split_holds_the_unseen_attacks_and_train_does_not(files):
    unseen = {ATTACK_IDS.index(a) for a in ("A05", "A06", "A07")}
    assert unseen <= set(read_split(files["test"]).attack.tolist())
    assert not unseen & set(read_split(files["train"]).attack.tolist())
    assert TINY.attacks("val") == TINY.attacks("train") == ("A01", "A02", "A03", "A04")


def test_val_attacks_change_the_val_split_only(tmp_path):
    held_out = SpoofSynthSpec(min_seconds=0.5, max_seconds=0.8, val_attacks=("A08",))
    assert held_out.attacks("val") == ("A08",) and held_out.attacks("train") == TINY.attacks("train")
    for split in ("train", "test"):  # their files do not depend on the option: reused, not regenerated
        assert split_path(tmp_path, held_out, split, 12, seed=0) == split_path(tmp_path, TINY, split, 12, seed=0)
    assert split_path(tmp_path, held_out, "val", 12, seed=0) != split_path(tmp_path, TINY, "val", 12, seed=0)
    clips = read_split(write_split(tmp_path, held_out, "val", 12, seed=0, progress=False, workers=1))
    assert set(clips.attack.tolist()) == {0, ATTACK_IDS.index("A08")}
    with pytest.raises(ValueError, match="val_attacks.*A99"):
        SpoofSynthSpec(val_attacks=("A99",))


def test_channel_vocoder_keeps_the_band_envelope_and_replaces_the_source():
    speaker = Speaker.from_id(7, seed=0)
    bona_fide = synthesize_utterance(np.random.default_rng(7), speaker, 2.0)
    spoof = apply_attack("A08", bona_fide, np.random.default_rng(1))
    bands = [(150, 400), (400, 1000), (1000, 2000), (2000, 4000), (4000, 7000)]
    level_db = [10 * np.log10(_band_energy(spoof, lo, hi) / _band_energy(bona_fide, lo, hi)) for lo, hi in bands]
    assert np.abs(level_db).max() < 3.0, level_db  # the vocoder's 16 bands carry the spectral envelope
    assert _band_energy(spoof, 0, 40) < 1e-3  # channels start at 60 Hz: no DC or rumble from the pulse train
    assert abs(np.corrcoef(spoof, bona_fide)[0, 1]) < 0.3  # the waveform itself is re-synthesised


def test_speaker_pools_are_disjoint(files):
    pools = {s: {spk.speaker_id for spk in split_speakers(TINY, s, seed=0)} for s in ("train", "val", "test")}
    assert len(pools["train"]) == 20 and len(pools["val"]) == len(pools["test"]) == 10
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"] and not pools["val"] & pools["test"]
    assert set(read_split(files["train"]).speaker.tolist()) <= pools["train"]
    assert set(read_split(files["test"]).speaker.tolist()) <= pools["test"]


def test_same_seed_same_file_other_seed_other_file(tmp_path, files):
    again = read_split(write_split(tmp_path / "a", TINY, "train", 12, seed=0, progress=False, workers=2))
    first = read_split(files["train"])
    for key in KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(first, key))  # also: independent of workers
    other = read_split(write_split(tmp_path / "b", TINY, "train", 12, seed=1, progress=False, workers=1))
    assert len(other.audio) != len(first.audio) or not np.array_equal(other.audio, first.audio)


@pytest.mark.parametrize("attack_id", list(ATTACKS))
def test_every_attack_changes_the_waveform_but_keeps_length(attack_id, utterance):
    spoof = apply_attack(attack_id, utterance, np.random.default_rng(1))
    assert spoof.dtype == np.float32 and spoof.shape == utterance.shape and np.isfinite(spoof).all()
    assert not np.allclose(spoof, utterance, atol=1e-3) and np.sqrt(np.mean(spoof**2)) > 1e-3
    assert attack_description(attack_id).startswith(attack_id)


def test_unknown_attack_ids_are_named():
    with pytest.raises(ValueError, match="A99.*A01"):
        apply_attack("A99", np.zeros(1000, np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="test_attacks.*A99"):
        SpoofSynthSpec(test_attacks=("A01", "A99"))
    with pytest.raises(ValueError, match="min_seconds"):
        SpoofSynthSpec(min_seconds=3.0, max_seconds=2.0)
    with pytest.raises(ValueError, match="bonafide_fraction"):
        SpoofSynthSpec(bonafide_fraction=1.5)


def test_level_is_not_a_class_cue():
    speakers = split_speakers(TINY, "train", seed=0)
    rms_db = {0: [], 1: []}
    for i in range(40):
        attack = 0 if i % 2 else 1 + (i // 2) % 4
        clip = render_clip(TINY, np.random.default_rng([9, i]), speakers[i % len(speakers)], attack)
        rms_db[int(attack == 0)].append(20 * np.log10(np.sqrt(np.mean(clip.astype(np.float64) ** 2))))
    assert abs(np.median(rms_db[0]) - np.median(rms_db[1])) < 3.0
    assert max(rms_db[0]) > min(rms_db[1]) and max(rms_db[1]) > min(rms_db[0])  # the ranges overlap


def test_bona_fide_is_voiced_at_the_speakers_f0():
    speaker = Speaker.from_id(7, seed=0)
    audio = synthesize_utterance(np.random.default_rng(2), speaker, 2.0).astype(np.float64)
    size, lags = 640, np.arange(SAMPLE_RATE // 400, SAMPLE_RATE // 60)
    f0s = []
    for start in range(0, len(audio) - size, size // 2):
        frame = audio[start : start + size] - audio[start : start + size].mean()
        ac = np.correlate(frame, frame, "full")[size - 1 :]
        if ac[0] > 0 and (ac[lags] / ac[0]).max() > 0.6:  # a clearly periodic (voiced) frame
            f0s.append(SAMPLE_RATE / lags[np.argmax(ac[lags])])
    assert len(f0s) >= 5
    assert np.median(f0s) == pytest.approx(speaker.f0_mean, rel=0.3)


def test_phase_randomisation_keeps_the_magnitude_and_changes_the_phase(utterance):
    spoof = apply_attack("A02", utterance, np.random.default_rng(1))

    def band_envelope(x: np.ndarray) -> np.ndarray:  # log energy in 16 bands x 10 time blocks of 6 frames
        frames = np.abs(np.fft.rfft(x[:15360].reshape(60, 256) * np.hanning(256))) ** 2  # (60, 129)
        return np.log10(frames[:, 1:].reshape(60, 16, 8).sum(-1).reshape(10, 6, 16).sum(1) + 1e-9)

    assert np.corrcoef(band_envelope(spoof).ravel(), band_envelope(utterance).ravel())[0, 1] > 0.95
    assert abs(np.corrcoef(spoof, utterance)[0, 1]) < 0.5  # the waveform itself is different


def test_codec_removes_energy_above_4_khz(utterance):
    before = _band_energy(utterance, 4200)
    after = _band_energy(apply_attack("A04", utterance, np.random.default_rng(1)), 4200)
    assert before > 1e-4 and after < 0.01 * before  # at least 20 dB less energy above the telephone band


def test_corrupted_files_are_rejected_with_file_and_key(files, tmp_path):
    broken = tmp_path / "missing.h5"
    shutil.copy(files["train"], broken)
    with h5py.File(broken, "a") as f:
        del f["speaker"]
    with pytest.raises(DataFileError, match=f"{broken}.*speaker"):
        read_split(broken)

    bad_offsets = tmp_path / "offsets.h5"
    shutil.copy(files["train"], bad_offsets)
    with h5py.File(bad_offsets, "a") as f:
        f["offsets"][-1] = f["offsets"][-1] + 5
    with pytest.raises(DataFileError, match=f"{bad_offsets}.*offsets"):
        read_split(bad_offsets)

    bad_label = tmp_path / "label.h5"
    shutil.copy(files["train"], bad_label)
    with h5py.File(bad_label, "a") as f:
        f["label"][...] = 1 - f["label"][...]
    with pytest.raises(DataFileError, match=f"{bad_label}.*label"):
        read_split(bad_label)


def test_new_parameters_write_a_new_file(files):
    path = files["train"]
    stamp = path.stat().st_mtime_ns
    assert write_split(path.parent, TINY, "train", 12, seed=0, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not regenerated
    other = split_path(path.parent, SpoofSynthSpec(min_seconds=0.5, max_seconds=0.9), "train", 12, seed=0)
    assert other != path and "train" in other.name and "12" in other.name
    assert split_path(path.parent, TINY, "train", 12, seed=1) != path
