"""LFCC features, the two-GMM countermeasure and its perceptron twin (`abr_lab.rawnet2.baselines`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from abr_lab.rawnet2.baselines import (
    LFCCGMM,
    LFCCMLP,
    delta_features,
    lfcc,
    linear_filter_edges,
    linear_filterbank,
)

FS = 16_000
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def lowpassed(n: int, seed: int) -> np.ndarray:
    """White noise through a 2 kHz low-pass: a stand-in spoof with no energy in the high band."""
    return sosfilt(butter(8, 2000, fs=FS, output="sos"), noise(n, seed)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# LFCC


@pytest.mark.parametrize(("num_samples", "frames"), [(64_000, 399), (320, 1), (479, 1), (480, 2), (16_000, 99)])
def test_lfcc_shape_and_frame_count(num_samples, frames):
    feats = lfcc(noise(num_samples, 0))
    assert feats.shape == (frames, 60) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert lfcc(noise(num_samples, 0), deltas=False, num_ceps=13).shape == (frames, 13)


def test_lfcc_of_silence_is_finite():
    assert np.isfinite(lfcc(np.zeros(FS, dtype=np.float32))).all()


def test_deltas_of_a_constant_signal_vanish():
    feats = lfcc(np.full(FS, 0.3), pre_emphasis=0.0)  # every frame identical
    assert np.abs(feats[:, 20:]).max() < 1e-5
    assert np.allclose(feats[:, :20], feats[0, :20], atol=1e-5)


def test_deltas_of_a_ramp_are_its_slope():
    ramp = np.arange(10, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])  # (f, c): slopes 1 and -2
    d = delta_features(ramp, width=2)
    assert np.allclose(d[2:-2], [1.0, -2.0])  # the edges see a repeated frame, hence a smaller slope


def test_linear_filterbank_covers_the_band_with_equal_spacing():
    edges = linear_filter_edges(20, FS)
    assert edges[0] == 0.0 and edges[-1] == FS / 2 and len(edges) == 22
    assert np.allclose(np.diff(edges), FS / 2 / 21)
    bank = linear_filterbank(20, 512, FS)  # (m, k)
    assert bank.shape == (20, 257) and bank.min() >= 0.0 and np.allclose(bank.max(axis=1), 1.0, atol=0.05)
    peaks = np.fft.rfftfreq(512, 1 / FS)[bank.argmax(axis=1)]
    assert np.allclose(peaks, edges[1:-1], atol=FS / 512 / 2 + 1e-9)  # each peak at its centre, to half a bin
    between = (np.fft.rfftfreq(512, 1 / FS) >= edges[1]) & (np.fft.rfftfreq(512, 1 / FS) <= edges[-2])
    assert np.allclose(bank[:, between].sum(axis=0), 1.0)  # overlapping halves: flat response inside the band


@pytest.mark.parametrize("freq", [1000.0, 3000.0, 7000.0])
def test_a_pure_tone_lands_in_the_right_filter(freq):
    edges = linear_filter_edges(20, FS)
    expected = int(np.argmin(np.abs(edges[1:-1] - freq)))  # the filter whose peak is nearest the tone
    tone = np.sin(2 * np.pi * freq * np.arange(FS) / FS)
    frames = np.lib.stride_tricks.sliding_window_view(tone, 320)[::160] * np.hamming(320)
    energies = (np.abs(np.fft.rfft(frames, n=512)) ** 2) @ linear_filterbank(20, 512, FS).T  # (f, m)
    assert (energies.argmax(axis=1) == expected).all()
    # the same through `lfcc`: inverting the orthonormal DCT of all 20 cepstra gives back the log energies
    from scipy.fft import idct

    log_energies = idct(lfcc(tone, deltas=False, pre_emphasis=0.0), type=2, norm="ortho", axis=1)
    assert (log_energies.argmax(axis=1) == expected).all()


def test_lfcc_rejects_bad_audio():
    with pytest.raises(ValueError, match="NaN"):
        lfcc(np.array([0.0, np.nan] * 400))
    with pytest.raises(ValueError, match="fewer than one frame"):
        lfcc(np.zeros(100))
    with pytest.raises(ValueError, match="1-D"):
        lfcc(np.zeros((2, 1000)))
    with pytest.raises(ValueError, match="num_ceps"):
        lfcc(np.zeros(1000), num_ceps=30)


# --------------------------------------------------------------------------------------------------------------
# LFCC + GMM


def easy_task(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """`n` clips of 0.5 s, alternating white noise (bona fide, 1) and low-passed noise (spoof, 0)."""
    labels = np.arange(n) % 2 == 0
    clips = [noise(8000, seed + i) if y else lowpassed(8000, seed + i) for i, y in enumerate(labels)]
    return clips, labels.astype(int)


def tiny_model(seed: int = 0) -> LFCCGMM:
    return LFCCGMM(n_components=2, max_frames=1000, max_iter=200, seed=seed)


def test_lfcc_gmm_ranks_an_easy_task_perfectly():
    clips, labels = easy_task(12, seed=0)
    model = tiny_model().fit(clips, labels)
    test_clips, test_labels = easy_task(10, seed=100)
    scores = model.score_many(test_clips)
    assert scores[test_labels == 1].min() > scores[test_labels == 0].max()  # AUC = 1
    assert scores[test_labels == 1].min() > 0 > scores[test_labels == 0].max()  # and the LLR sign says the class
    assert np.allclose(scores, [model.score(c) for c in test_clips])


def test_score_many_batches_agree():
    clips, labels = easy_task(6, seed=0)
    model = tiny_model().fit(clips, labels)
    assert np.allclose(model.score_many(clips, batch_frames=1), model.score_many(clips))


def test_lfcc_gmm_is_deterministic_by_seed():
    clips, labels = easy_task(8, seed=0)
    a, b = tiny_model(seed=3).fit(clips, labels), tiny_model(seed=3).fit(clips, labels)
    assert np.allclose(a.score_many(clips), b.score_many(clips), rtol=0, atol=1e-10)


def test_lfcc_gmm_refuses_one_class_and_an_unfitted_score():
    clips, _ = easy_task(4, seed=0)
    with pytest.raises(ValueError, match="both classes"):
        tiny_model().fit(clips, [1, 1, 1, 1])
    with pytest.raises(ValueError, match="1 \\(bona fide\\) or 0"):
        tiny_model().fit(clips, [1, 0, 2, 0])
    with pytest.raises(ValueError, match="labels"):
        tiny_model().fit(clips, [1, 0])
    with pytest.raises(RuntimeError, match="not fitted"):
        tiny_model().score(clips[0])


def tiny_mlp(seed: int = 0) -> LFCCMLP:
    return LFCCMLP(hidden=(8,), max_frames=1000, max_epochs=50, seed=seed)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tiny budgets on purpose
def test_lfcc_mlp_ranks_an_easy_task_perfectly_and_its_score_is_the_mean_frame_log_odds():
    clips, labels = easy_task(12, seed=0)
    model = tiny_mlp().fit(clips, labels)
    test_clips, test_labels = easy_task(10, seed=100)
    scores = model.score_many(test_clips)
    assert scores[test_labels == 1].min() > 0 > scores[test_labels == 0].max()
    p = model.pipeline.predict_proba(model.features(test_clips[0]))[:, 1]  # (f,) P(bona fide) per frame
    p = np.clip(p, LFCCMLP.EPS, 1 - LFCCMLP.EPS)
    assert model.score(test_clips[0]) == pytest.approx(np.mean(np.log(p / (1 - p))), rel=1e-9)
    assert np.allclose(model.score_many(test_clips, batch_frames=1), scores)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_lfcc_mlp_is_deterministic_by_seed_and_refuses_bad_settings():
    clips, labels = easy_task(8, seed=0)
    a, b = tiny_mlp(seed=3).fit(clips, labels), tiny_mlp(seed=3).fit(clips, labels)
    assert np.array_equal(a.score_many(clips), b.score_many(clips))
    with pytest.raises(RuntimeError, match="LFCCMLP is not fitted"):
        tiny_mlp().score(clips[0])
    with pytest.raises(ValueError, match="hidden=\\[8, 0\\]"):
        LFCCMLP(hidden=(8, 0))
    with pytest.raises(TypeError, match="num_bands"):
        LFCCMLP(num_bands=20)  # not an LFCC option


# --------------------------------------------------------------------------------------------------------------
# the script, on tiny generated splits


def _script():
    """scripts/rawnet2_baselines.py as a module."""
    spec = importlib.util.spec_from_file_location("rawnet2_baselines", SCRIPTS / "rawnet2_baselines.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_script_reports_overall_unseen_and_per_attack(tmp_path):
    script = _script()
    out = tmp_path / "spoof_baselines.json"
    args = ["--data-dir", str(tmp_path / "data"), "--num-train", "20", "--num-test", "30", "--seed", "1"]
    report = script.main([*args, "--n-components", "2", "--max-frames", "2000", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    figures = report["results"]["lfcc_gmm"]
    assert set(figures["per_attack"]) == {"A01", "A02", "A05", "A06", "A07"}
    assert figures["unseen_attacks"] == ["A05", "A06", "A07"]
    assert figures["unseen"]["num_spoof"] == sum(figures["per_attack"][a]["num_spoof"] for a in ("A05", "A06", "A07"))
    for row in (figures["overall"], figures["unseen"], *figures["per_attack"].values()):
        assert 0.0 <= row["eer"] <= 1.0 and row["min_tdcf"] >= 0.0
    assert figures["fit_seconds"] > 0


def test_script_fits_on_the_corpus_it_is_given(tmp_path):
    script = _script()
    args = ["--data-dir", str(tmp_path / "data"), "--num-train", "20", "--num-test", "20", "--seed", "1"]
    args += ["--train-attacks", "A01", "A02", "--test-attacks", "A01", "A03", "--min-seconds", "0.3"]
    args += ["--max-seconds", "0.5", "--n-components", "2", "--max-frames", "2000", "--out", str(tmp_path / "o.json")]
    report = script.main(args)
    figures = report["results"]["lfcc_gmm"]
    assert set(figures["per_attack"]) == {"A01", "A03"} and figures["unseen_attacks"] == ["A03"]
    assert report["train_attacks"] == ["A01", "A02"] and report["settings"]["max_seconds"] == 0.5


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_script_scores_with_the_perceptron_into_its_own_report(tmp_path):
    script = _script()
    assert script.parse_args(["--model", "lfcc_mlp"]).out == script.MLP_OUT != script.DEFAULT_OUT
    assert script.parse_args([]).out == script.DEFAULT_OUT and script.parse_args([]).n_components == 128
    with pytest.raises(SystemExit):  # argparse's error: --n-components is an option of --model lfcc_gmm
        script.parse_args(["--model", "lfcc_mlp", "--n-components", "4"])
    args = ["--data-dir", str(tmp_path / "data"), "--num-train", "20", "--num-test", "20", "--seed", "1"]
    args += ["--model", "lfcc_mlp", "--hidden", "8", "--max-epochs", "5", "--out", str(tmp_path / "mlp.json")]
    report = script.main(args)
    assert list(report["results"]) == ["lfcc_mlp"]
    assert report["settings"]["hidden"] == [8] and report["settings"]["max_epochs"] == 5
    assert "n_components" not in report["settings"]
    assert 0.0 <= report["results"]["lfcc_mlp"]["unseen"]["eer"] <= 1.0
