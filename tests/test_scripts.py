"""The family scripts run on tiny data (the real runs are `make quality`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SPOOF

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_DATA = ["data.duration_s=2", "data.train_window_s=1", "data.num_train=2", "data.num_val=4", "data.num_test=4"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lstm_baselines_report_both_filters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data are generated under ./data
    rows = load("lstm_baselines").baselines(TINY_DATA)
    assert set(rows) == {"kalman", "bandpass", "zero"}
    assert rows["kalman"]["mse"] < rows["bandpass"]["mse"] < rows["zero"]["mse"]
    assert rows["kalman"]["mse_settled"] < rows["kalman"]["mse"]
    assert (tmp_path / "data" / "sinusoids").is_dir()


def test_lstm_baselines_refuse_per_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="per_step"):
        load("lstm_baselines").baselines(["data=sinusoids_per_step", *TINY_DATA])


def test_lstm_benchmark_smoke_writes_every_field(tmp_path):
    out = tmp_path / "results.json"
    results = load("benchmark").main(["lstm", "--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == results
    for key in (
        "batched_steps_per_s",
        "oracle_steps_per_s",
        "oracle_one_call_steps_per_s",
        "batched_over_oracle",
        "batched_cores_used",
        "batched_steps_per_s_1thread",
        "stateful_steps_per_s",
        "batched_over_stateful",
        "train_steps_per_s_hidden64",
        "train_steps_per_s_hidden128",
    ):
        assert results["lstm"][key] > 0, key  # no timing asserted: fields only
    assert results["lstm"]["smoke"] is True and "torch" in results["environment"]


def test_a_partial_benchmark_run_rewrites_only_its_sections_and_dates_each(tmp_path):
    out = tmp_path / "results.json"
    benchmark = load("benchmark")
    first = benchmark.main(["s4d", "--smoke", "--out", str(out)])
    assert first["s4d"]["measured"] == first["environment"]["date"]
    earlier = {**first, "s4d": {**first["s4d"], "measured": "2026-01-01T00:00:00+00:00"}}  # as if from a past run
    out.write_text(json.dumps(earlier))
    second = benchmark.main(["health", "--smoke", "--out", str(out)])
    assert second["s4d"] == earlier["s4d"]  # kept as measured, with its own date
    assert second["health"]["measured"] == second["environment"]["date"]
    assert "| measured | 2026-01-01T00:00:00+00:00 |" in out.with_suffix(".md").read_text()


def test_unet_benchmark_smoke_writes_every_field(tmp_path):
    results = load("benchmark").main(["unet", "--smoke", "--out", str(tmp_path / "results.json")])["unet"]
    for key in (
        "optimized_unet_tiny_parameters",
        "optimized_unet_tiny_train_s_per_batch2",
        "optimized_unet_tiny_stride1_train_s_per_batch2",
        "attention300_dropout0_s",
        "attention300_dropout0.1_s",
        "attention_dropout_slowdown",
    ):
        assert results[key] > 0, key  # no timing asserted: fields only
    for net in ("optimized_unet_tiny", "optimized_unet_tiny_stride1"):
        forward, train = results[f"{net}_forward_mflops_per_sample"], results[f"{net}_train_mflops_per_sample"]
        assert 0 < forward < train, net  # counted, not timed: a training pass adds the backward's products
    assert "FFT" in results["flops_not_counted"]


def test_s4d_benchmark_smoke_writes_every_field(tmp_path):
    results = load("benchmark").main(["s4d", "--smoke", "--out", str(tmp_path / "results.json")])["s4d"]
    for length in (16, 64):
        for key in ("kernel_s", "fft_s", "recurrence_s", "recurrence_over_fft", "fft_per_LlogL_rel"):
            assert results[f"{key}_L{length}"] > 0, (key, length)  # no timing asserted: fields only
    assert results["fft_per_LlogL_rel_L16"] == results["recurrence_per_LlogL_rel_L16"] == 1.0  # the reference
    assert {"fft_slope_L64", "recurrence_slope_L64", "recurrence_per_LlogL_rel_L64"} <= set(results)
    assert results["channels"] == 4 and results["smoke"] is True


def test_health_benchmark_smoke_writes_every_field(tmp_path):
    results = load("benchmark").main(["health", "--smoke", "--out", str(tmp_path / "results.json")])["health"]
    for key in ("train_step_s", "probe_step_s", "bookkeeping_s_per_step", "interval"):
        assert results[key] > 0, key  # no timing asserted: fields only
    assert results["overhead_share"] >= 0


def test_rawnet2_benchmark_smoke_writes_every_field(tmp_path):
    results = load("benchmark").main(["rawnet2", "--smoke", "--out", str(tmp_path / "results.json")])["rawnet2"]
    for net in ("rawnet2", "rawnet2_lite", "rawnet2_lite_stride4"):
        for field in ("parameters", "train_s_per_batch2", "activation_mb_per_clip"):
            assert results[f"{net}_{field}"] > 0, (net, field)  # no timing asserted: fields only
    for key in ("sinc_fixed_forward_s", "sinc_rebuilt_forward_s", "sinc_build_filters_s"):
        assert results[key] > 0, key
    # memory is no timing: the strided stem keeps less for backward than the seed's full-rate stem
    assert results["rawnet2_lite_stride4_activation_mb_per_clip"] < results["rawnet2_lite_activation_mb_per_clip"]


def test_puzzle_benchmark_smoke_writes_every_field(tmp_path):
    results = load("benchmark").main(["puzzle", "--smoke", "--out", str(tmp_path / "results.json")])["puzzle"]
    assert results["parameters"] > 0
    for grid in (4, 2):
        for field in ("train_s_per_batch", "data_s_per_batch", "data_over_model", "val_data_s_per_batch"):
            assert results[f"grid{grid}_{field}"] > 0, (grid, field)  # no timing asserted: fields only
    assert results["grid4_piece_px"] < results["grid2_piece_px"]  # the canvas follows the grid


def test_puzzle_baselines_score_template_matching(tmp_path):
    out = tmp_path / "tm.json"
    argv = ["data.puzzle_size=64", "data.rows=2", "data.cols=2", "data.puzzles_per_image=1", "--limit", "6"]
    report = load("puzzle_baselines").main([*argv, "--split", "val", "--out", str(out)])
    figures = report["results"]["template_ccoeff_normed"]
    assert figures["pieces"] == 4  # one val photo, one 2 x 2 puzzle: fewer pieces than the limit
    assert 0 <= figures["acc_iou50"] <= 1 and len(figures["confusion"]) == 4
    assert json.loads(out.read_text())["data"]["rows"] == 2


def test_puzzle_baselines_score_the_untrained_network_beside_template_matching(tmp_path):
    argv = [
        "data.puzzle_size=64",
        "data.rows=2",
        "data.cols=2",
        "data.puzzles_per_image=1",
        "model.arch=puzzle_cnn_tiny",
    ]
    report = load("puzzle_baselines").main([*argv, "--split", "val", "--untrained", "--out", str(tmp_path / "tm.json")])
    untrained = report["results"]["puzzle_cnn_untrained"]
    assert set(untrained) == {"iou", "acc_iou50", "centre_error", "rotation_accuracy", "spread_ratio"}
    assert 0 <= untrained["acc_iou50"] <= 1 and 0 <= untrained["rotation_accuracy"] <= 1
    # seeded: a second run scores the same
    again = load("puzzle_baselines").main([*argv, "--split", "val", "--untrained", "--out", str(tmp_path / "b.json")])
    assert again["results"]["puzzle_cnn_untrained"] == untrained


def test_puzzle_baselines_count_look_alikes_against_the_split_rendered_without_changes(tmp_path):
    argv = ["data.puzzle_size=64", "data.rows=2", "data.cols=2", "data.puzzles_per_image=2", "--limit", "1"]
    report = load("puzzle_baselines").main(
        [*argv, "--split", "test", "--look-alikes", "--out", str(tmp_path / "a.json")]
    )
    found = report["results"]["look_alikes"]
    assert found["pieces"] == 16  # every piece of the split (--limit is template matching's): 2 photos x 2 x 4
    for key in ("look_alike_place", "look_alike_turn", "pixel_placed", "pixel_turned"):
        assert 0 <= found[key] <= 1
    assert found["place_margin_q10"] <= found["place_margin_q25"] <= found["place_margin_q50"]
    tops = [found["pixel_placed"], found["pixel_right_place_in_top4"], found["pixel_right_place_in_top8"]]
    assert tops == sorted(tops) and found["pixel_right_place_in_top32"] == 1.0  # 32 distinct peaks cover a 2 x 2 puzzle


def test_abr_data_stats_prints_the_readme_figures():
    figures = load("abr_data_stats").main(["data=abr_small"])
    patients, recordings = (int(x) for x in figures["patients / recordings"].split(" / "))
    assert patients == 60 and recordings > 600
    shares = [float(x) for x in figures["class share %"].split(" / ")]
    assert len(shares) == 5 and abs(sum(shares) - 100) < 0.5
    assert 0.5 < float(figures["Fmp, noise only (median)"]) < 1.5


def test_quality_rawnet2_reuses_the_baseline_only_when_made_on_the_same_train_and_test_splits(tmp_path, monkeypatch):
    quality = load("quality_rawnet2")
    data = quality.data_settings(["model=rawnet2", "data.val_attacks=[A08]", f"paths.data_dir={tmp_path}"])
    assert data["train_attacks"] == ["A01", "A02", "A03", "A04"] and "val_attacks" not in data  # val plays no part
    cache = tmp_path / "spoof_baselines.json"
    settings = {key: data[key] for key in quality.SETTINGS} | {"n_components": 128}
    report = {"results": {"lfcc_gmm": "cached"}, "data_dir": data["data_dir"], "settings": settings}
    cache.write_text(json.dumps(report | {k: data[k] for k in ("train_attacks", "test_attacks")}))
    monkeypatch.setattr(quality, "BASELINES", cache)
    fitted: list[list[str]] = []
    monkeypatch.setattr(
        quality.rawnet2_baselines, "main", lambda argv: fitted.append(argv) or {"results": {"lfcc_gmm": "new"}}
    )
    assert quality.baseline_figures(data) == "cached" and not fitted
    cache.write_text(cache.read_text().replace('"lfcc_gmm"', '"lfcc_mlp"'))  # another countermeasure's report
    assert quality.baseline_figures(data) == "new" and len(fitted) == 1
    fitted.clear()
    other = quality.data_settings(["model=rawnet2", "data.train_attacks=[A01,A02]", f"paths.data_dir={tmp_path}"])
    assert quality.baseline_figures(other) == "new"  # another train split: fitted again, on that split
    argv = fitted[0]
    assert argv[argv.index("--train-attacks") + 1 : argv.index("--test-attacks")] == ["A01", "A02"]
    assert "--num-train=2000" in argv and "--bonafide-fraction=0.2" in argv


def test_quality_rawnet2_with_seeds_trains_each_and_reads_the_bar_on_their_fusion(tmp_path, monkeypatch, capsys):
    quality = load("quality_rawnet2")
    assert quality.parse_seeds(["model=x", "--seeds", "3,4", "seed=9"]) == ([3, 4], ["model=x", "seed=9"])
    for bad in (["--seeds", "3"], ["--seeds=3,3"], ["--seeds", "a,b"]):
        with pytest.raises(SystemExit, match="--seeds"):
            quality.parse_seeds(bad)
    monkeypatch.setattr(quality, "RUNS", tmp_path / "runs")
    baseline = {"overall": {"eer": 0.5, "min_tdcf": 1.0}, "unseen": {"eer": 0.5, "min_tdcf": 1.0}}
    baseline["per_attack"] = {attack: {"eer": 0.5} for attack in ("A01", "A02", "A05", "A06", "A07")}
    monkeypatch.setattr(quality, "baseline_figures", lambda data: baseline)
    tiny = [o for o in TINY_SPOOF if o != "model=rawnet2"] + [f"paths.data_dir={tmp_path / 'data'}"]
    quality.main(["--seeds", "1,2", *tiny])
    (run,) = (tmp_path / "runs").iterdir()
    report = json.loads((run / "quality.json").read_text())
    assert list(report["rows"]) == ["seed1", "seed2", "fused", "lfcc_gmm"] and report["seeds"] == [1, 2]
    fused = torch.load(run / "fused.ckpt", map_location="cpu", weights_only=False)
    assert [Path(p).parent.parent.name for p in fused["ensemble_of"]] == ["seed1", "seed2"]
    assert "bar (fused)" in capsys.readouterr().out


def test_quality_unet_verdicts_compare_with_the_bars_and_both_baselines() -> None:
    quality = load("quality_unet")
    good = {
        "class/macro_f1": 0.75,
        "peaks/latency_r2_V": 0.97,
        "peaks/amplitude_r2_V": 0.97,
        "threshold/r2": 0.92,
        "threshold/mae": 4.0,
        "signal/corr_response": 0.93,
        "class/recall_normal": 0.9,
        "class/recall_neuropathy": 0.5,
    }
    baseline = {**good, "class/macro_f1": 0.70, "peaks/latency_r2_V": 0.96, "threshold/mae": 5.0}
    baseline.update({"peaks/amplitude_r2_V": 0.96, "threshold/r2": 0.90})
    rows = {"gbt": baseline, "cnn": baseline}
    lines, passed = quality.verdicts(good, rows)
    assert passed and all(line.strip().startswith("PASS") for line in lines)
    # above the bar but not above a baseline fails; a class never recalled fails
    _, passed = quality.verdicts({**good, "threshold/mae": 5.5}, rows)
    assert not passed
    lines, passed = quality.verdicts({**good, "class/recall_neuropathy": 0.0}, rows)
    assert not passed and "neuropathy" in lines[-1]
    assert "0.750" in quality.table({"optimized_unet": good})


def test_framework_benchmark_smoke_writes_every_field_for_every_family(tmp_path):
    out = tmp_path / "results.json"
    results = load("benchmark").main(["framework", "--smoke", "--out", str(out)])["framework"]
    assert set(results) - {"smoke"} == {"lstm_extractor", "optimized_unet", "rawnet2", "puzzle_cnn"}
    for family, r in results.items():
        if family == "smoke":
            continue
        for key in (
            "plain_samples_per_s",
            "lightning_bare_samples_per_s",
            "lightning_configured_samples_per_s",
            "lightning_bare_over_plain",
            "lightning_configured_over_plain",
            "model_steps_per_s",
            "train_gflop_per_sample",
            "model_gflops_per_s",
            "matmul_gflops_per_s",
            "model_over_matmul",
            "data_batches_per_s",
            "data_over_model",
            "inference_samples_per_s",
            "inference_ms_per_batch",
        ):
            assert r[key] > 0, (family, key)  # no timing asserted: fields only
        assert {k: len(v) for k, v in r["samples_per_s_by_repeat"].items()} == {"bare": 1, "configured": 1, "plain": 1}
        ((batch, memory),) = r["memory"].items()
        assert int(batch) == r["batch_size"] and memory["peak_rss_mb"] >= memory["rss_before_training_mb"] > 0
        for loop in ("plain", "lightning_bare", "lightning_configured"):
            syncs = r["host_syncs_per_step"][loop]
            assert {"read", "shape", "host_data", "where"} <= set(syncs), (family, loop)
        assert r["compile_graphs"]["graphs"] >= 1 and r["compile_graphs"]["graph_breaks"] >= 0, family
        fit = r["compile_fit"]
        assert set(fit["by_stage"]) == {"train", "validation", "test"} and fit["graphs"] >= 1, family
        assert {"ops", "graph_breaks", "breaks_by_reason"} <= set(fit), family
    report = out.with_suffix(".md").read_text()
    assert "| lstm_extractor |" in report and "| puzzle_cnn |" in report and "torch" in report
    assert "Host syncs per training step" in report


def test_framework_benchmark_of_one_family_keeps_the_other_rows(tmp_path):
    out = tmp_path / "results.json"
    earlier = {"lstm_extractor": {"batch_size": 32}, "rawnet2": {"batch_size": 32}, "smoke": True}
    out.write_text(json.dumps({"framework": earlier}))
    argv = ["framework", "--smoke", "--framework-family", "lstm_extractor", "--out", str(out)]
    results = load("benchmark").main(argv)["framework"]
    assert results["rawnet2"] == {"batch_size": 32}  # kept as it was
    assert results["lstm_extractor"]["plain_samples_per_s"] > 0  # measured again
    assert json.loads(out.read_text())["framework"] == results


def test_framework_benchmark_stopped_mid_family_keeps_what_it_measured(tmp_path, monkeypatch):
    """A GPU run's compile can outlast the time limit: the stages measured before it are on disk, marked partial."""
    script = load("benchmark")
    first = {  # the first stages of a GPU row: the framework figures, then fp32 on the GPU
        "samples_per_batch": 4,
        "plain_samples_per_s": 10.0,
        "lightning_bare_over_plain": 1.0,
        "lightning_configured_over_plain": 0.99,
        "data_over_model": 12.0,
        "inference_samples_per_s": 40.0,
        "inference_ms_per_batch": 100.0,
        "memory": {},
        "gpu": {"batch_scaling": {}, "fp32_samples_per_s": 20.0, "fp32_gpu_utilisation_percent": 50.0},
    }

    def stopped_after_one_stage(family, smoke, on_progress=None):
        on_progress(first)
        raise KeyboardInterrupt  # the run is stopped (timeout, Ctrl-C) before the family finishes

    monkeypatch.setattr(script, "bench_family", stopped_after_one_stage)
    out = tmp_path / "results.json"
    with pytest.raises(KeyboardInterrupt):
        script.main(["framework", "--smoke", "--framework-family", "rawnet2", "--out", str(out)])
    results = json.loads(out.read_text())
    saved, date = results["framework"], results["environment"]["date"]
    assert saved["rawnet2"] == {**first, "partial": True, "measured": date} and saved["smoke"] is True
    report = out.with_suffix(".md").read_text()
    assert "| rawnet2 (stopped early) | 20 (50 %) | not measured | not measured |" in report
    assert f"Rows measured: rawnet2 {date}." in report
