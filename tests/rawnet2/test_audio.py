"""Audio reading (resampling, mono mixdown, errors) and the RawNet2 reference clip rule."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from abr_lab.rawnet2.audio import AUDIO_SUFFIXES, AudioError, fit_clip, list_audio_files, random_start, read_audio


def _tone(rate: int, seconds: float = 0.2, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


# read_audio


def test_flac_round_trip(tmp_path):
    audio = _tone(16_000)
    path = tmp_path / "a.flac"
    sf.write(path, audio, 16_000)
    out = read_audio(path)
    assert out.dtype == np.float32 and out.shape == (3200,)
    np.testing.assert_allclose(out, audio, atol=1e-4)  # 16-bit FLAC quantisation


@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_other_rates_are_resampled_and_keep_pitch(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, _tone(rate), rate)
    out = read_audio(path, sample_rate=16_000)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == 3200  # 0.2 s at 16 kHz
    assert abs(_peak_hz(out, 16_000) - 1000.0) <= 16_000 / len(out)  # within one FFT bin
    assert np.isfinite(out).all()


def test_stereo_is_averaged(tmp_path):
    left, right = np.full(800, 0.5, np.float32), np.full(800, -0.25, np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16_000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path), np.full(800, 0.125), atol=1e-7)


def test_empty_file_names_path(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioError, match=r"empty\.wav: the file holds no samples"):
        read_audio(path)


@pytest.mark.parametrize("content", [b"this is not audio at all", b""])
def test_garbage_file_names_path(tmp_path, content):
    path = tmp_path / "garbage.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=r"garbage\.wav: not a readable audio file \(.+\)"):
        read_audio(path)


def test_missing_file_is_audio_error(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.flac"):
        read_audio(tmp_path / "nope.flac")


def test_non_finite_samples_name_path(tmp_path):
    path = tmp_path / "nan.wav"
    audio = np.zeros(100, np.float32)
    audio[10] = np.nan
    sf.write(path, audio, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: .*non-finite"):
        read_audio(path)


# fit_clip / random_start


def test_fit_clip_tiles_short_clip():
    out = fit_clip(np.array([1, 2, 3], np.float32), 7)
    np.testing.assert_array_equal(out, [1, 2, 3, 1, 2, 3, 1])


def test_fit_clip_tiles_from_start():
    np.testing.assert_array_equal(fit_clip(np.array([1, 2, 3]), 5, start=1), [2, 3, 1, 2, 3])


def test_fit_clip_truncates_long_clip():
    audio = np.arange(10)
    np.testing.assert_array_equal(fit_clip(audio, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(fit_clip(audio, 4, start=6), [6, 7, 8, 9])
    np.testing.assert_array_equal(fit_clip(audio, 1, start=9), [9])


def test_fit_clip_matches_reference_pad():
    """The ASVspoof 2021 RawNet2 baseline's `pad`: tile x to max_len samples."""
    rng = np.random.default_rng(0)
    for n, length in [(1, 5), (3, 64), (100, 64), (64, 64), (10, 31)]:
        x = rng.standard_normal(n)
        reps = length // n + 1
        reference = x[:length] if n >= length else np.tile(x, (1, reps))[:, :length][0]
        np.testing.assert_array_equal(fit_clip(x, length), reference)


def test_fit_clip_returns_copy():
    audio = np.arange(10.0)
    fit_clip(audio, 4)[0] = -1
    assert audio[0] == 0


@pytest.mark.parametrize(
    ("audio", "length", "start", "match"),
    [
        (np.zeros(0), 4, 0, "empty"),
        (np.zeros(3), 0, 0, "length must be >= 1"),
        (np.zeros(3), 2, 3, "start must be in"),
        (np.zeros(3), 2, -1, "start must be in"),
        (np.zeros((2, 3)), 2, 0, "1-D"),
    ],
)
def test_fit_clip_errors(audio, length, start, match):
    with pytest.raises(ValueError, match=match):
        fit_clip(audio, length, start)


def test_random_start_range():
    rng = np.random.default_rng(0)
    starts = {random_start(10, 4, rng) for _ in range(500)}
    assert starts == set(range(7))  # 0..6 inclusive, all reached
    assert random_start(4, 4, rng) == 0
    assert random_start(3, 4, rng) == 0
    with pytest.raises(ValueError, match="length"):
        random_start(10, 0, rng)


# list_audio_files


def test_list_audio_files_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b.wav", "a.FLAC", "sub/c.flac", "sub/notes.txt", "d.mp3"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    files = list_audio_files(tmp_path)
    assert files == [tmp_path / "a.FLAC", tmp_path / "b.wav", tmp_path / "sub" / "c.flac"]
    assert AUDIO_SUFFIXES == (".wav", ".flac")


def test_list_audio_files_errors(tmp_path):
    with pytest.raises(AudioError, match=r"missing: audio folder does not exist"):
        list_audio_files(tmp_path / "missing")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(AudioError, match="no audio files"):
        list_audio_files(tmp_path)
