"""The benchmark runs in smoke mode and writes every field (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_lstm_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "results.json"
    benchmark.main(["lstm", "--smoke", "--out", str(out)])
    results = json.loads(out.read_text())
    lstm = results["lstm"]
    for key in ("batched_steps_per_s", "stateful_steps_per_s", "batched_over_stateful", "batch_size"):
        assert lstm[key] > 0, key
    assert lstm["smoke"] is True and "torch" in results["environment"]
