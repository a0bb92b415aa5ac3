"""What `abr_lab.benchmarking` does, checked without timing anything and without a GPU: the order the compared loops
run in and how their ratio is taken, batch tiling, the batch-scaling loop's stopping rules (CUDA's memory counters
faked), the utilisation sampler without NVML, and the host syncs and compiled graphs of a training step."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from abr_lab import benchmarking
from abr_lab.benchmarking import (
    UtilisationSampler,
    build,
    fullest_factor,
    gpu_batch_scaling,
    gpu_variant_cell,
    markdown_report,
    matmul_flops_per_s,
    model_flops_cell,
    paired_ratio,
    precisions_at_batch,
    rotated,
    tile_batch,
)


def test_rotated_repeats_give_each_loop_every_place_once():
    loops = ["bare", "configured", "plain"]
    orders = [rotated(loops, r) for r in range(3)]
    assert orders[0] == loops
    assert all(sorted(order) == sorted(loops) for order in orders)  # every loop runs in every repeat
    for place in range(3):  # and in every place exactly once over three repeats
        assert sorted(order[place] for order in orders) == sorted(loops)
    assert rotated(loops, 3) == loops


def test_paired_ratio_leaves_out_the_repeats_a_slow_spell_spoils():
    """Lightning at 0.98 x the plain loop; the machine's speed differs per repeat, and a slow spell (x 0.8) hits
    Lightning's run in the first repeat and the plain loop's in the third."""
    speeds = [50.0, 56.0, 52.0]
    lightning = [0.98 * s * (0.8 if i == 0 else 1.0) for i, s in enumerate(speeds)]  # 39.2, 54.88, 50.96
    plain = [s * (0.8 if i == 2 else 1.0) for i, s in enumerate(speeds)]  # 50, 56, 41.6
    assert paired_ratio(lightning, plain) == pytest.approx(0.98)
    assert statistics.median(lightning) / statistics.median(plain) == pytest.approx(50.96 / 50)  # 1.019: the spells
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_tile_batch_points_each_piece_at_its_own_copy_of_the_puzzle():
    batch = {
        "puzzle": torch.arange(2.0).view(2, 1),  # two puzzles
        "piece": torch.arange(3.0).view(3, 1),
        "puzzle_index": torch.tensor([0, 1, 1]),
    }
    tiled = tile_batch("puzzle_cnn", batch, 3)
    assert tiled["puzzle"].shape == (6, 1) and tiled["piece"].shape == (9, 1)
    assert tiled["puzzle_index"].tolist() == [0, 1, 1, 2, 3, 3, 4, 5, 5]
    # every piece's puzzle is the same image as before tiling
    assert torch.equal(tiled["puzzle"][tiled["puzzle_index"]], batch["puzzle"][batch["puzzle_index"]].repeat(3, 1))


def test_tile_batch_repeats_every_tensor_of_other_families():
    batch = {"audio": torch.randn(2, 5), "label": torch.tensor([0, 1])}
    tiled = tile_batch("rawnet2", batch, 4)
    assert tiled["audio"].shape == (8, 5) and tiled["label"].tolist() == [0, 1] * 4


@pytest.fixture
def fake_cuda_memory(monkeypatch):
    """CUDA's memory counters on the CPU: the peak grows with the tiled batch (1 GB per lstm example, 9 GB card)."""
    state = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: SimpleNamespace(total_memory=9 * 2**30))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: state.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: state["peak"])
    real_step = benchmarking.plain_step

    def step(family, module, batch, *args):
        state["peak"] = max(state["peak"], batch["mixture"].shape[0] * 2**30)
        return real_step(family, module, batch, *args)

    monkeypatch.setattr(benchmarking, "plain_step", step)
    return state


@pytest.fixture(scope="module")
def lstm_setup(tmp_path_factory):
    workdir = Path(tmp_path_factory.mktemp("bench"))
    cfg, datamodule, module = build("lstm_extractor", smoke=True, workdir=workdir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))  # 4 sequences
    module.trainer = L.Trainer(logger=False, enable_checkpointing=False, max_epochs=1)  # configure_optimizers reads it
    return module, batch


def test_batch_scaling_stops_once_the_gpu_is_nearly_full(lstm_setup, fake_cuda_memory):
    module, batch = lstm_setup
    out = gpu_batch_scaling("lstm_extractor", module, batch, clip=0.0, max_factor=64, max_step_s=math.inf)
    # 4 GB, then 8 GB: above 85 % of 9 GB, stop
    assert list(out) == ["4", "8"]
    assert out["8"]["cuda_max_allocated_mb"] == 8 * 1024 and out["4"]["samples_per_s"] > 0


def test_batch_scaling_records_out_of_memory_and_stops(lstm_setup, fake_cuda_memory, monkeypatch):
    module, batch = lstm_setup
    real_step = benchmarking.plain_step

    def step(family, module, batch, *args):
        if batch["mixture"].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return real_step(family, module, batch, *args)

    monkeypatch.setattr(benchmarking, "plain_step", step)
    out = gpu_batch_scaling("lstm_extractor", module, batch, clip=0.0, max_factor=64, max_step_s=math.inf)
    assert list(out) == ["4", "x2"] and out["x2"] == {"out_of_memory": True}


def test_utilisation_sampler_without_nvml_reports_nan(monkeypatch):
    def missing() -> float:
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", missing)
    with UtilisationSampler(period=0.001) as sampler:
        torch.randn(64, 64) @ torch.randn(64, 64)
    assert math.isnan(sampler.mean)


def test_utilisation_sampler_averages_its_samples(monkeypatch):
    readings = iter([10.0, 30.0] + [20.0] * 10_000)
    monkeypatch.setattr(torch.cuda, "utilization", lambda: next(readings))
    with UtilisationSampler(period=0.001) as sampler:
        while len(sampler.samples) < 3:
            pass
    assert sampler.samples[:2] == [10.0, 30.0] and 10.0 < sampler.mean <= 20.0


def test_fullest_factor_is_the_tiling_of_the_fastest_batch():
    scaling = {
        "32": {"samples_per_s": 100.0},
        "64": {"samples_per_s": 300.0},
        "128": {"samples_per_s": 250.0},
        "x8": {"out_of_memory": True},
    }
    assert fullest_factor(scaling, samples_per_batch=32) == 2
    assert fullest_factor({}, samples_per_batch=32) == 1


def test_precisions_at_batch_reports_each_variant_and_keeps_going_past_a_failure(lstm_setup, monkeypatch):
    module, batch = lstm_setup

    def no_compiler() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(module.net, "compile", no_compiler)
    out, calls = {}, []
    precisions_at_batch("lstm_extractor", module, batch, 0.0, 2, out, measured=lambda: calls.append(dict(out)))
    assert len(calls) == 3 and "fp32_samples_per_s" in calls[0]  # saved after each variant
    assert out["factor"] == 2 and out["samples_per_batch"] == 8  # 4 sequences tiled twice
    assert out["fp32_samples_per_s"] > 0 and out["bf16_over_fp32"] > 0  # on the CPU the CUDA autocast is a no-op
    assert out["bf16_compile_error"] == "RuntimeError: no compiler here" and "bf16_compile_samples_per_s" not in out
    assert out["fp32_finite"] is True and out["bf16_finite"] is True and "bf16_compile_finite" not in out


def test_a_variant_that_trains_to_nan_is_flagged_and_the_next_starts_from_the_same_weights(lstm_setup, monkeypatch):
    module, batch = lstm_setup
    before = {k: v.clone() for k, v in module.state_dict().items()}
    seen: list[bool] = []

    def step_seconds(family, module, batch, factor, clip) -> tuple[int, float]:
        seen.append(all(torch.equal(v, before[k]) for k, v in module.state_dict().items()))
        if len(seen) == 2:  # the bf16 variant diverges
            with torch.no_grad():
                next(module.parameters()).fill_(math.nan)
        return 8, 0.1

    monkeypatch.setattr(benchmarking, "_tiled_step_seconds", step_seconds)
    monkeypatch.setattr(module.net, "compile", lambda: None)
    out: dict = {}
    precisions_at_batch("lstm_extractor", module, batch, 0.0, 2, out, measured=lambda: None)
    assert seen == [True, True, True]  # every variant from the weights it was handed
    assert (out["fp32_finite"], out["bf16_finite"], out["bf16_compile_finite"]) == (True, False, True)
    row = {"gpu": {"at_full_batch": out}, "partial": False}
    assert "| 8: 1, weights non-finite, 1 |" in markdown_report({"framework": {"x": row}})  # bf16, bf16 + compile


@pytest.mark.parametrize("family", ["lstm_extractor", "optimized_unet", "rawnet2", "puzzle_cnn"])
def test_a_training_step_leaves_the_host_free(family, tmp_path):
    """Between progress-bar redraws and log steps, a configured run's training step (callbacks, loggers, curriculum)
    asks the host for nothing: on a GPU the host runs ahead. The one exception is PuzzleCNN's network, which reads
    the pieces' puzzle index once per forward to group them by puzzle (in the plain loop as well)."""
    cfg, datamodule, module = build(family, smoke=True, workdir=tmp_path)
    syncs = benchmarking.lightning_syncs(module, datamodule, cfg, warmup=1, steps=1, configured=True, workdir=tmp_path)
    grouping = "read abr_lab/puzzle_cnn/network.py:"
    assert all(w.startswith(grouping) and w.endswith(" puzzle_groups") for w in syncs["where"]), syncs["where"]
    assert syncs["shape"] == syncs["host_data"] == 0
    assert syncs["read"] == (1 if family == "puzzle_cnn" else 0)  # PuzzleNet.forward groups its pieces once
    plain = benchmarking.plain_syncs(family, module, next(iter(datamodule.train_dataloader())), 1.0, steps=1)
    assert plain["read"] == syncs["read"] and plain["shape"] == 0


# what `model.compile=true` may leave to eager, by family: dynamo does not trace RNN modules, and PuzzleNet reads
# its pieces' puzzle index once per forward (`puzzle_groups`) and leaves its pixel level to eager
RNN = "Attempted to wrap RNN, GRU, or LSTM"
EXPECTED_BREAKS = {
    "lstm_extractor": {RNN},
    "optimized_unet": set(),
    "rawnet2": {RNN},
    "puzzle_cnn": {"Data dependent operator", "Skip inlining `torch.compiler.disable()`d function"},
}


@pytest.mark.parametrize("family", sorted(EXPECTED_BREAKS))
def test_a_compiled_run_compiles_each_stage_once(family, tmp_path):
    """Over two epochs with validation (the health monitor's attention probe included) and a test, a compiled
    network breaks only where it must and is compiled once per training and per test, not again in the second epoch
    or after the probe. The U-Net's probe once cut it into ~70 per-layer graphs."""
    fit = benchmarking.compile_fit(family, smoke=True, workdir=tmp_path)
    assert {*fit["breaks_by_reason"], *fit["untraced_by_reason"]} == EXPECTED_BREAKS[family], fit
    graphs_per_forward = 1 + len(EXPECTED_BREAKS[family])  # a graph before and after the break
    assert fit["by_stage"]["train"] <= graphs_per_forward and fit["by_stage"]["test"] <= graphs_per_forward, fit
    if family != "lstm_extractor":  # the LSTM is the forward's first op: dynamo may leave all of it to eager
        assert fit["by_stage"]["train"] >= 1 and fit["ops"] > 0, fit


def test_gpu_variant_cell_gives_the_achieved_tflops_where_flops_were_counted():
    gpu = {"bf16_samples_per_s": 4000.0, "bf16_gpu_utilisation_percent": 87.4, "fp32_error": "RuntimeError: no"}
    assert gpu_variant_cell(gpu, "bf16", 2.5) == "4,000 (87 %, 10.0 TFLOP/s)"  # 4,000 samples/s x 2.5 GFLOP
    assert gpu_variant_cell(gpu, "bf16", None) == "4,000 (87 %)"
    assert gpu_variant_cell({**gpu, "bf16_finite": False}, "bf16", None) == "4,000 (87 %), weights non-finite"
    assert gpu_variant_cell(gpu, "fp32", 2.5) == "failed: RuntimeError: no"
    assert gpu_variant_cell(gpu, "bf16_compile", 2.5) == "not measured"


def test_model_flops_cell_shows_the_share_of_the_matmul():
    assert model_flops_cell({"model_gflops_per_s": 80.0, "model_over_matmul": 0.4}) == "80 (40 %)"
    assert model_flops_cell({"model_gflops_per_s": 80.0}) == "80"
    assert model_flops_cell({}) == "-"


def test_matmul_rate_counts_two_flops_per_multiply_add(monkeypatch):
    monkeypatch.setattr(benchmarking, "median_time", lambda fn, repeats: (fn(), 0.5)[1])  # every product: 0.5 s
    assert matmul_flops_per_s(torch.device("cpu"), torch.float32, 64, 1) == 2 * 64**3 / 0.5


def test_a_failing_flop_count_costs_the_flop_figures_not_the_row(monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("no formula for this kernel (fake)")

    monkeypatch.setattr(benchmarking, "training_flops", failing)
    row = benchmarking.bench_family("lstm_extractor", smoke=True)
    assert row["flops_error"] == "RuntimeError: no formula for this kernel (fake)"
    assert "model_gflops_per_s" not in row and row["matmul_gflops_per_s"] > 0 and row["plain_samples_per_s"] > 0
    assert model_flops_cell(row) == "-"
