"""Speed benchmarks, written to a results file (never asserted in tests).

    python scripts/benchmark.py [framework] [lstm] [unet] [s4d] [health] [rawnet2] [puzzle] [--smoke]
                                [--framework-family FAMILY ...] [--out benchmarks/results.json]

framework: every family's default recipe through a bare Lightning `Trainer`, the configured one and a plain PyTorch
loop over the same network, data and optimiser (samples/s and the ratios), the DataLoader against the model's step,
inference, and peak memory by batch size (`abr_lab.benchmarking`); on a GPU also bf16-mixed and `torch.compile`
against fp32 with the GPU's utilisation, and throughput and device memory up to the batch that fills the GPU. The
results file is rewritten after each stage (an unfinished family's row marked "partial"), so a run stopped by a
time limit keeps what it measured. `--framework-family rawnet2` re-measures one family and keeps the other rows of
the results file.

lstm: steps/s of batched full-sequence inference (batch 256 x 2,000 steps) against the stateful L = 1 loop (batch
1, the streaming use), measured in one run, and their ratio; the same input through a bare `nn.LSTM` of the same
size (the oracle: what the model can reach on this machine) in the chunks of time steps the model runs on CPU,
the model's share of it, and the bare `nn.LSTM` over the whole sequence in one call (slower: see
`abr_lab.lstm_extractor.network.CPU_CHUNK_BYTES`); the cores the batched run kept busy (CPU time / wall time: ~2
on an idle 2-core machine; near 1 means another process held a core, and with two OpenMP threads every time step
then waits for it, so the figure is not the machine's) and the batched rate on one thread; training steps/s (one
truncated-BPTT chunk update) at 64 and 128 hidden units.
unet: parameters and seconds per training batch (forward, backward, AdamW; batch 64 of 300 samples) of the
U-Net variants, of the CPU variant without patches (stem_stride 1: attention at every long level at full
resolution), and the cost of attention-weight dropout at 300 tokens (fused kernel vs the reference one it forces);
MFLOPs per sample of a forward pass and of a training pass (forward + backward) of every registered variant and of
the stride-1 one, counted by `torch.utils.flop_counter.FlopCounterMode` at the timing batch: matrix products,
convolutions and attention only (`flops_not_counted` names what is left out: FFTs, elementwise ops).
s4d: seconds of the S4D layer's state-space part at L = 256, 1,024, 4,096 and 16,384 (batch 8, 256 channels, state
32: the default U-Net's bottleneck; a causal layer, which the recurrence needs) by FFT (`S4D.convolve`: the kernel,
then the FFT convolution), of the kernel alone, and by the step-by-step recurrence (`S4D.scan`, the streaming mode);
how each grows: the log-log slope of time against L from the previous length (1: linear) and time / (L log2 L)
relative to the shortest length (at or below ~1: no faster than L log L).
health: the health monitor's cost on the U-Net's default recipe (CPU variant, batch 64, every task weighted):
seconds of a plain training step, of a step with a gradient probe (one extra backward per task for the gradient
shares, plus the dead-head check), of the per-step bookkeeping, and the overhead at the default interval
(conf/callbacks/default.yaml) as a share of step time: (probe extra / interval + bookkeeping) / step.
rawnet2: parameters and seconds per training batch (forward, backward, Adam; batch 8 of 64,600 samples) of
rawnet2 and rawnet2_lite (seed stem and strided stem); the sinc front end with its filters built once (the fixed
buffer) against rebuilding them every forward pass (what the learnable option must do, and what the seed did for
fixed ones); and the activation memory a training step keeps for backward per 64,600-sample clip in fp32 (the bytes
of the tensors autograd saves, counted by a saved-tensors hook) of rawnet2_lite at stem stride 1 and 4, and of
rawnet2.
puzzle: parameters and seconds per training batch of puzzle_cnn (forward, the module's four losses, backward,
AdamW; 2 puzzles of 512 px with 16 pieces each, the default training batch) at the default 16 x 16 grid and at the
curriculum's first 8 x 8; seconds per batch of the training DataLoader at each grid (pieces rendered on the fly, one
process, no workers) and a validation batch (2 puzzles, every cell); data batches per training step (the ratio:
above 1 the model waits for nothing, with `data.num_workers` multiplying it).
Medians over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import lightning
import torch
from torch.utils.flop_counter import FlopCounterMode

from abr_lab.atomic import atomic_write_text
from abr_lab.benchmarking import FAMILIES, bench_family, markdown_report
from abr_lab.flops import FLOPS_NOT_COUNTED  # also registers the formulas PyTorch lacks (CPU attention, LSTM)
from abr_lab.layers.s4d import S4D
from abr_lab.layers.sinc import SincFilterbank
from abr_lab.lstm_extractor import LSTMExtractor, StatefulExtractor
from abr_lab.lstm_extractor.network import build_inputs, cpu_chunk_steps
from abr_lab.optimized_unet.network import OptimizedHierarchicalUNet
from abr_lab.puzzle_cnn import PuzzleModule, PuzzlePhotosDataModule
from abr_lab.rawnet2 import network as _rawnet2_variants  # noqa: F401  registers rawnet2, rawnet2_lite, _tiny
from abr_lab.registry import create_model, list_models

REPO = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_steps_per_s(hidden_size: int, batch: int, chunk: int, repeats: int) -> float:
    """Time steps per second of one truncated-BPTT chunk update (forward, backward, AdamW step)."""
    torch.manual_seed(0)
    net = LSTMExtractor(hidden_size=hidden_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, target = torch.randn(batch, chunk, 5), torch.randn(batch, chunk)

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(net(x)[0], target).backward()
        optimizer.step()

    return batch * chunk / median_seconds(update, repeats)


def steps_per_s_and_cores(fn: Callable[[], object], steps: int, repeats: int) -> tuple[float, float]:
    """Median steps per second of `fn`, and the cores this process kept busy meanwhile (CPU time / wall time)."""
    cpu, wall = time.process_time(), time.perf_counter()
    rate = steps / median_seconds(fn, repeats)
    return rate, (time.process_time() - cpu) / (time.perf_counter() - wall)


def bench_lstm(smoke: bool) -> dict[str, float]:
    """Batched full-sequence inference vs the stateful step-by-step loop (default network) and vs a bare `nn.LSTM`
    of the same size (the oracle), and training speed."""
    batch, seq_len, stateful_steps, repeats = (8, 200, 50, 1) if smoke else (256, 2000, 1000, 5)
    torch.manual_seed(0)
    net = LSTMExtractor().eval()
    oracle = torch.nn.LSTM(net.in_chans, net.hidden_size, net.num_layers, batch_first=True).eval()
    cond = torch.eye(4).repeat(batch // 4 or 1, 1)[:batch]
    x = build_inputs(torch.randn(batch, seq_len), cond)  # (b, t, 5)
    steps, threads = batch * seq_len, torch.get_num_threads()

    def oracle_in_chunks() -> None:  # as the model runs on CPU: chunks of time steps, the state carried
        state = None
        for piece in x.split(cpu_chunk_steps(batch, net.hidden_size), dim=1):
            state = oracle(piece, state)[1]

    with torch.inference_mode():
        batched_rate, cores = steps_per_s_and_cores(lambda: net(x), steps, repeats)
        oracle_rate, _ = steps_per_s_and_cores(oracle_in_chunks, steps, repeats)
        one_call_rate, _ = steps_per_s_and_cores(lambda: oracle(x), steps, repeats)
        torch.set_num_threads(1)  # immune to a second process on the other core, which stalls every step at two
        try:
            one_thread_rate, _ = steps_per_s_and_cores(lambda: net(x), steps, repeats)
        finally:
            torch.set_num_threads(threads)

    stream = StatefulExtractor(net)
    one_cond, samples = torch.eye(4)[:1], torch.randn(1, stateful_steps)
    stateful_rate = stateful_steps / median_seconds(lambda: stream.run(samples, one_cond), repeats)
    return {
        "batch_size": batch,
        "sequence_length": seq_len,
        "batched_steps_per_s": batched_rate,
        "oracle_steps_per_s": oracle_rate,  # bare nn.LSTM, same size, input and chunks
        "oracle_one_call_steps_per_s": one_call_rate,  # bare nn.LSTM over the whole sequence at once
        "batched_over_oracle": batched_rate / oracle_rate,
        "batched_cores_used": cores,
        "batched_steps_per_s_1thread": one_thread_rate,
        "stateful_steps_per_s": stateful_rate,
        "batched_over_stateful": batched_rate / stateful_rate,
        # training at the default width and at twice it: batch 32, 500-step chunks
        "train_steps_per_s_hidden64": train_steps_per_s(64, 32, 50 if smoke else 500, repeats),
        "train_steps_per_s_hidden128": train_steps_per_s(128, 32, 50 if smoke else 500, repeats),
    }


def unet_train_seconds(net: OptimizedHierarchicalUNet, batch: int, repeats: int) -> float:
    """Median seconds of one training batch: forward, a loss touching every output, backward, AdamW step."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    signal, static = torch.randn(batch, 1, net.signal_length), torch.randn(batch, 4)

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(v.float().mean() for v in net(signal, static).values()).backward()
        optimizer.step()

    return median_seconds(update, repeats)


def unet_flops_per_sample(net: OptimizedHierarchicalUNet, batch: int) -> tuple[float, float]:
    """FLOPs per sample of a forward pass and of forward + backward, counted by `FlopCounterMode` at this batch.

    Counted: matrix products, convolutions and attention (2 per multiply-add; with `abr_lab.flops`' formulas for
    the CPU attention kernel). Not counted: FFTs, which carry the S4D convolutions, and elementwise ops.
    """
    signal, static = torch.randn(batch, 1, net.signal_length), torch.randn(batch, 4)
    with FlopCounterMode(display=False) as counter:
        outputs = net(signal, static)
        forward = counter.get_total_flops()
        sum(v.float().mean() for v in outputs.values()).backward()
        total = counter.get_total_flops()
    net.zero_grad(set_to_none=True)
    return forward / batch, total / batch


def bench_unet(smoke: bool) -> dict[str, float]:
    """Training cost and FLOPs of the U-Net variants, of full-resolution attention, and of attention-weight
    dropout."""
    batch, repeats = (2, 1) if smoke else (64, 3)
    timed = ("optimized_unet_tiny",) if smoke else ("optimized_unet", "optimized_unet_cpu")
    counted = timed if smoke else tuple(list_models("optimized_unet"))
    out: dict[str, float] = {}
    for name in counted:
        torch.manual_seed(0)
        net = create_model(name)
        out[f"{name}_parameters"] = float(sum(p.numel() for p in net.parameters()))
        forward, train = unet_flops_per_sample(net, batch)
        out[f"{name}_forward_mflops_per_sample"], out[f"{name}_train_mflops_per_sample"] = forward / 1e6, train / 1e6
        if name in timed:
            out[f"{name}_train_s_per_batch{batch}"] = unet_train_seconds(net, batch, repeats)
    full_resolution = create_model(timed[-1], stem_stride=1)
    forward, train = unet_flops_per_sample(full_resolution, batch)
    out[f"{timed[-1]}_stride1_forward_mflops_per_sample"] = forward / 1e6
    out[f"{timed[-1]}_stride1_train_mflops_per_sample"] = train / 1e6
    out[f"{timed[-1]}_stride1_train_s_per_batch{batch}"] = unet_train_seconds(full_resolution, batch, repeats)
    out["flops_not_counted"] = FLOPS_NOT_COUNTED
    q = torch.randn(batch, 4, 300, 8, requires_grad=True)  # (B, heads, tokens, head dim)
    for dropout in (0.0, 0.1):

        def attend(p: float = dropout) -> None:
            torch.nn.functional.scaled_dot_product_attention(q, q, q, dropout_p=p).sum().backward()

        out[f"attention300_dropout{dropout:g}_s"] = median_seconds(attend, repeats)
    out["attention_dropout_slowdown"] = out["attention300_dropout0.1_s"] / out["attention300_dropout0_s"]
    return out


def growth(seconds: dict[int, float], prefix: str) -> dict[str, float]:
    """How time grows with L: the log-log slope from the previous length (1: linear, 2: quadratic) and time per
    L log2 L relative to the shortest length (at or below ~1: no faster than L log L)."""
    lengths = sorted(seconds)
    first = seconds[lengths[0]] / (lengths[0] * math.log2(lengths[0]))
    out = {
        f"{prefix}_slope_L{length}": math.log(seconds[length] / seconds[shorter]) / math.log(length / shorter)
        for shorter, length in itertools.pairwise(lengths)
    }
    for length in lengths:
        out[f"{prefix}_per_LlogL_rel_L{length}"] = seconds[length] / (length * math.log2(length)) / first
    return out


def bench_s4d(smoke: bool) -> dict[str, float]:
    """S4D's state-space part by FFT convolution against its step-by-step recurrence: seconds and growth in L."""
    batch, channels, state_size, repeats = (1, 4, 8, 1) if smoke else (8, 256, 32, 3)
    lengths = (16, 64) if smoke else (256, 1024, 4096, 16_384)
    fft_repeats = 1 if smoke else 7  # the FFT path takes milliseconds at short L, where this machine's spread is widest
    torch.manual_seed(0)
    layer = S4D(channels, state_size=state_size).eval()  # causal: a bidirectional layer has no recurrence
    out: dict[str, float] = {"batch_size": batch, "channels": channels, "state_size": state_size}
    fft, recurrence = {}, {}
    with torch.inference_mode():
        for length in lengths:
            u = torch.randn(batch, channels, length)  # (B, H, L)
            out[f"kernel_s_L{length}"] = median_seconds(lambda n=length: layer.convolution_kernel(n), fft_repeats)
            fft[length] = out[f"fft_s_L{length}"] = median_seconds(lambda u=u: layer.convolve(u), fft_repeats)
            recurrence[length] = out[f"recurrence_s_L{length}"] = median_seconds(lambda u=u: layer.scan(u), repeats)
            out[f"recurrence_over_fft_L{length}"] = recurrence[length] / fft[length]
    return {**out, **growth(fft, "fft"), **growth(recurrence, "recurrence")}


def bench_health(smoke: bool) -> dict[str, float]:
    """Overhead of `HealthMonitor` at its default interval on a U-Net training step."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from abr_lab.health import HealthMonitor, receives_gradient, task_gradient_norms
    from abr_lab.optimized_unet.module import OptimizedUNetModule

    batch_size, repeats = (2, 1) if smoke else (64, 5)
    arch = "optimized_unet_tiny" if smoke else "optimized_unet_cpu"
    interval = int(OmegaConf.load(REPO / "conf" / "callbacks" / "default.yaml").health.interval)
    loss = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "loss" / "abr.yaml"))
    torch.manual_seed(0)
    module = OptimizedUNetModule(arch=arch, loss=loss)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    t = module.hparams.signal_length
    batch = {
        "signal": torch.randn(batch_size, 1, t),
        "clean": torch.randn(batch_size, 1, t),
        "static": torch.randn(batch_size, 4),
        "peaks": torch.rand(batch_size, 3, 2) * 8,
        "peak_mask": torch.rand(batch_size, 3) > 0.3,
        "label": torch.randint(0, 5, (batch_size,)),
        "threshold": torch.rand(batch_size) * 80,
    }
    shared = module.shared_parameters()

    def step(probe: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        total, parts, _ = module.step_loss(batch, module.train_weights)
        if probe:
            task_gradient_norms({k: module.train_weights[k] * v for k, v in parts.items()}, shared)
        total.backward()
        if probe:
            [receives_gradient(head.parameters()) for head in module.task_heads().values()]
        optimizer.step()

    monitor = HealthMonitor(interval=interval)
    trainer = SimpleNamespace(global_step=1, world_size=1)
    module.task_losses = {k: torch.tensor(1.0) for k in module.train_weights}
    loss_value = torch.tensor(1.0)

    def bookkeeping() -> None:  # what every step costs: the non-finite flags and the loss shares
        for _ in range(100):
            monitor.on_train_batch_end(trainer, module, {"loss": loss_value}, batch, 0)

    plain = median_seconds(lambda: step(False), repeats)
    probed = median_seconds(lambda: step(True), repeats)
    per_step = median_seconds(bookkeeping, repeats) / 100
    return {
        "arch": arch,
        "interval": float(interval),
        "train_step_s": plain,
        "probe_step_s": probed,
        "bookkeeping_s_per_step": per_step,
        "overhead_share": (max(probed - plain, 0.0) / interval + per_step) / plain,
    }


def saved_activation_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    parameters = {p.untyped_storage().data_ptr() for p in net.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return sum(n for ptr, n in storages.items() if ptr not in parameters)


def train_seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one training batch of the anti-spoofing networks: forward, cross-entropy, backward, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    labels = torch.arange(len(x)) % 2

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), labels).backward()
        optimizer.step()

    return median_seconds(update, repeats)


def bench_rawnet2(smoke: bool) -> dict[str, float]:
    """Training cost and activation memory of the RawNet2 networks; fixed vs rebuilt sinc filters."""
    batch, samples, repeats = (2, 4000, 1) if smoke else (8, 64_600, 3)
    networks = {
        "rawnet2": ("rawnet2_tiny", {}) if smoke else ("rawnet2", {}),
        "rawnet2_lite": ("rawnet2_lite", {}),
        "rawnet2_lite_stride4": ("rawnet2_lite", {"stem_kernel": 8, "stem_stride": 4}),
    }
    out: dict[str, float] = {"batch_size": batch, "clip_samples": samples}
    x = torch.randn(batch, samples)
    for key, (name, kwargs) in networks.items():
        torch.manual_seed(0)
        net = create_model(name, **kwargs).train()
        out[f"{key}_parameters"] = float(sum(p.numel() for p in net.parameters()))
        out[f"{key}_train_s_per_batch{batch}"] = train_seconds(net, x, repeats)
        out[f"{key}_activation_mb_per_clip"] = saved_activation_bytes(net, x[:1]) / 2**20

    fixed = SincFilterbank(20, 1024, sample_rate=16_000)
    rebuilt = SincFilterbank(20, 1024, sample_rate=16_000, learnable=True)
    audio = x[:, None, :]  # (b, 1, t)
    with torch.inference_mode():
        out["sinc_fixed_forward_s"] = median_seconds(lambda: fixed(audio), repeats)
        out["sinc_rebuilt_forward_s"] = median_seconds(lambda: rebuilt(audio), repeats)
        out["sinc_build_filters_s"] = median_seconds(rebuilt.kernels, repeats)
    return out


def puzzle_train_seconds(module: PuzzleModule, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median seconds of one PuzzleModule training batch: forward, the weighted losses, backward, AdamW."""
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)

    def update() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = module.run_batch(batch)
        sum(module.losses(out, batch).values()).backward()
        optimizer.step()

    return median_seconds(update, repeats)


def bench_puzzle(smoke: bool) -> dict[str, float]:
    """Training cost of puzzle_cnn against the cost of rendering its batches on the fly."""
    arch, size, grids, repeats = ("puzzle_cnn_tiny", 64, (4, 2), 1) if smoke else ("puzzle_cnn", 512, (16, 8), 3)
    torch.manual_seed(0)
    module = PuzzleModule(arch=arch).train()
    out: dict[str, float] = {"puzzle_size": size, "parameters": float(sum(p.numel() for p in module.parameters()))}
    for grid in grids:
        dm = PuzzlePhotosDataModule(puzzle_size=size, rows=grid, cols=grid, batch_size=2, puzzles_per_image=1)
        dm.setup("fit")
        loader = iter(dm.train_dataloader())
        batch = next(loader)
        data_s = median_seconds(lambda loader=loader: next(loader), repeats, warmup=0)
        train_s = puzzle_train_seconds(module, batch, repeats)
        out[f"grid{grid}_piece_px"] = float(batch["piece"].shape[-1])
        out[f"grid{grid}_train_s_per_batch"] = train_s
        out[f"grid{grid}_data_s_per_batch"] = data_s
        out[f"grid{grid}_data_over_model"] = train_s / data_s
        val = iter(dm.val_dataloader())
        out[f"grid{grid}_val_data_s_per_batch"] = median_seconds(lambda val=val: next(val), 1, warmup=0)
    return out


def bench_framework(
    smoke: bool, families: Sequence[str] = FAMILIES, save: Callable[[dict[str, object]], None] | None = None
) -> dict[str, object]:
    """Each family through the framework: see `abr_lab.benchmarking.bench_family`. `save` gets the rows so far after
    each stage, the unfinished family's row marked ``"partial": true``."""
    rows: dict[str, object] = {}
    for family in families:

        def progress(row: dict[str, object], family: str = family) -> None:
            if save is not None:
                save({**rows, family: {**row, "partial": True}})

        rows[family] = bench_family(family, smoke, on_progress=progress)
    return rows


BENCHMARKS = {
    "framework": bench_framework,  # every family: Lightning vs plain loop, data vs model, inference, memory
    "lstm": bench_lstm,
    "unet": bench_unet,
    "s4d": bench_s4d,
    "health": bench_health,
    "rawnet2": bench_rawnet2,
    "puzzle": bench_puzzle,
}


def environment() -> dict[str, object]:
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: checks the fields, not speed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument(
        "--framework-family",
        action="append",
        choices=FAMILIES,
        metavar="FAMILY",
        help="framework: measure only this family (repeatable); the others' rows stay as the results file has them",
    )
    args = parser.parse_intermixed_args(argv)  # `framework --framework-family rawnet2 health` too
    unknown = sorted(set(args.families) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")

    results: dict[str, object] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["environment"] = environment()
    measured = results["environment"]["date"]  # each section keeps its own: a partial run rewrites only its sections

    def write() -> None:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), markdown_report(results))

    for family in args.families or list(BENCHMARKS):
        if family == "framework":
            previous = results.get("framework", {})
            kept = previous if args.framework_family and previous.get("smoke") == args.smoke else {}

            def save(rows: dict[str, object], kept: dict = kept) -> None:  # a stopped run keeps what it measured
                dated = {f: {**r, "measured": measured} if isinstance(r, dict) else r for f, r in rows.items()}
                results["framework"] = {**kept, **dated, "smoke": args.smoke}
                write()

            save(bench_framework(args.smoke, args.framework_family or FAMILIES, save))
        else:
            results[family] = {**BENCHMARKS[family](args.smoke), "smoke": args.smoke, "measured": measured}
        print(f"{family}: {json.dumps(results[family], indent=1)}")
    write()
    print(f"written to {args.out} and {args.out.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
