"""The family scripts run on tiny data (the real runs are `make quality`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
    for key in ("batched_steps_per_s", "stateful_steps_per_s", "batched_over_stateful", "train_steps_per_s_hidden64"):
        assert results["lstm"][key] > 0, key  # no timing asserted: fields only
    assert results["lstm"]["smoke"] is True and "torch" in results["environment"]


def test_abr_data_stats_prints_the_readme_figures():
    figures = load("abr_data_stats").main(["data=abr_small"])
    patients, recordings = (int(x) for x in figures["patients / recordings"].split(" / "))
    assert patients == 60 and recordings > 600
    shares = [float(x) for x in figures["class share %"].split(" / ")]
    assert len(shares) == 5 and abs(sum(shares) - 100) < 0.5
    assert 0.5 < float(figures["Fmp, noise only (median)"]) < 1.5
