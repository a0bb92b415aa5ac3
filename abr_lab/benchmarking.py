"""The framework against what a user would write by hand, per family (`python scripts/benchmark.py framework`).

For each family, in one process, on its default recipe (network, batch size, optimiser, schedule, gradient clipping
as configured; the data shrunk so that they generate in seconds):

- training throughput (samples/s) of the LightningModule under a bare `Trainer` (no logger, callbacks or progress
  bar), under the configured one (the callbacks, logger and progress bar of `conf/`), and of a plain PyTorch loop
  over the same network, DataLoader, optimiser and scheduler; the ratios Lightning / plain. Repeats alternate the
  three, each first in turn (`rotated`); throughputs are medians over repeats, ratios the median of the repeats'
  own ratios (`paired_ratio`);
- FLOPs of one training batch (forward and backward, counted by `FlopCounterMode` with `abr_lab.flops`' formulas:
  matrix products, convolutions, attention, recurrent kernels; not FFTs or elementwise ops) per sample, and the rate
  the plain training step on a batch in memory achieves (GFLOP/s), against what one large matrix product reaches
  on the same device in the same run (`matmul_flops_per_s`, fp32; on a GPU bf16 too): the gap to the hardware;
- DataModule throughput (batches/s through the configured DataLoader) against the model's training step rate on a
  batch already in memory; the ratio (above 1 the model never waits);
- inference throughput and per-batch latency (eval mode, `torch.inference_mode`);
- host syncs per training step (`abr_lab.host_sync`: the ops that would stop a GPU run's host until the device is
  done) of the plain loop, the bare and the configured Lightning run, and where they come from; counted on the CPU,
  in runs of their own (counting slows every op);
- the graphs `torch.compile` would cut the inference forward into, and where it breaks (`torch._dynamo.explain`);
  and the graphs a short configured run with ``model.compile=true`` compiles, by stage (`compile_fit`: each
  recompile is one more, and on a GPU each is a compilation), counted with a backend that builds nothing;
- peak memory per batch size: the peak RSS of a fresh process running two training steps (CPU), or
  `torch.cuda.max_memory_allocated` (GPU);
- on a GPU, in this order: the plain loop's throughput and device memory as the batch grows until the GPU is full
  (`gpu_batch_scaling`), its bf16 / compile ratios to fp32 eager at the fastest of those batches
  (`precisions_at_batch`), then bf16-mixed and `torch.compile` variants of the bare Lightning run at the recipe's
  batch, with the mean GPU utilisation during each. `on_progress` hands over each stage's figures as soon as they
  exist.

The health monitor probes gradients every `interval` steps (100): the few timed steps here start after the first
probe, so its cost is measured on its own (`scripts/benchmark.py health`).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import abr_lab.flops  # noqa: F401  registers the FLOP formulas PyTorch lacks (CPU attention, recurrent kernels)
from abr_lab.config import compose_config
from abr_lab.host_sync import HostSyncCounter, package_path
from abr_lab.lstm_extractor.network import build_inputs, detach_state

Batch = dict[str, Tensor]
FAMILIES = ("lstm_extractor", "optimized_unet", "rawnet2", "puzzle_cnn")
SYNC_STEPS = 2  # training steps whose host syncs are counted (the count is the same every step between log steps)


@dataclass(frozen=True)
class Recipe:
    """How a family is benchmarked: config overrides (full and smoke sizes), step counts, batch sizes for memory."""

    overrides: tuple[str, ...]
    smoke: tuple[str, ...]
    warmup: int
    steps: int
    repeats: int
    memory_batches: tuple[int, ...]


RECIPES: dict[str, Recipe] = {
    "lstm_extractor": Recipe(
        overrides=("model=lstm_extractor", "data.num_train=64", "data.num_val=4", "data.num_test=4"),
        smoke=(
            "model=lstm_extractor",
            "model.arch=lstm_extractor_tiny",
            "model.chunk_len=100",
            "data.duration_s=0.5",
            "data.train_window_s=0.3",
            "data.num_train=16",
            "data.num_val=4",
            "data.num_test=4",
            "data.batch_size=4",
        ),
        warmup=2,
        steps=6,
        repeats=6,  # short steps: more repeats to median over (3 left the ratio within noise of 0.95)
        memory_batches=(32, 128, 512),
    ),
    "optimized_unet": Recipe(
        overrides=("model=optimized_unet", "data=abr_small"),
        smoke=("model=optimized_unet", "model.arch=optimized_unet_tiny", "data=abr_small", "data.batch_size=8"),
        warmup=1,
        steps=4,
        repeats=6,
        memory_batches=(16, 64, 256),
    ),
    "rawnet2": Recipe(
        # 7 batches of 32 clips: 6 timed after 1 warm-up (2 timed batches left the ratio within noise of 0.95)
        overrides=("model=rawnet2", "data.num_train=224", "data.num_val=8", "data.num_test=8"),
        smoke=(
            "model=rawnet2",
            "model.arch=rawnet2_tiny",
            "data.num_train=12",
            "data.num_val=4",
            "data.num_test=4",
            "data.min_seconds=0.2",
            "data.max_seconds=0.3",
            "data.clip_samples=4000",
            "data.batch_size=4",
        ),
        warmup=1,
        steps=6,
        repeats=3,
        memory_batches=(8, 16, 32),
    ),
    "puzzle_cnn": Recipe(
        overrides=("model=puzzle_cnn", "data.puzzles_per_epoch=32"),
        smoke=(
            "model=puzzle_cnn",
            "model.arch=puzzle_cnn_tiny",
            "data.puzzle_size=64",
            "data.rows=2",
            "data.cols=2",
            "data.pieces_per_puzzle=4",
            "data.puzzles_per_epoch=8",
            "data.puzzles_per_image=1",
            "data.batch_size=2",
        ),
        warmup=1,
        steps=4,
        repeats=3,
        memory_batches=(1, 2, 4),
    ),
}


# ----------------------------------------------------------------------------------------------------------------
# what a user writes by hand: one training step and one inference pass per family


def batch_samples(family: str, batch: Batch) -> int:
    """Training examples in a batch (pieces for the puzzle family, whose batch is puzzles with their pieces)."""
    key = {"lstm_extractor": "mixture", "optimized_unet": "label", "rawnet2": "audio", "puzzle_cnn": "piece"}[family]
    return int(batch[key].shape[0])


def _clip(module: L.LightningModule, clip: float) -> None:
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)


def plain_step(
    family: str, module: L.LightningModule, batch: Batch, optimizer: Any, scheduler: Any, clip: float
) -> None:
    """One training batch the way a plain PyTorch loop does it: the family's loss, backward, clip, step."""
    if family == "lstm_extractor":  # truncated BPTT: one optimiser step per chunk, the state carried between chunks
        x = build_inputs(batch["mixture"], batch["condition"])  # (b, t, 1 + k)
        target, state, chunk = batch["target"], None, module.hparams.chunk_len
        for start in range(0, x.shape[1], chunk):
            pred, state = module.net(x[:, start : start + chunk], state)  # (b, l)
            loss = F.mse_loss(pred, target[:, start : start + chunk])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _clip(module, module.hparams.grad_clip)
            optimizer.step()
            state = detach_state(state)
    else:
        if family == "optimized_unet":
            loss = module.step_loss(batch, module.train_weights)[0]
        elif family == "rawnet2":
            loss = module.loss(module.net(batch["audio"]), batch["label"])  # (b, 2) logits -> weighted CE
        else:
            terms = module.losses(module.run_batch(batch), batch)
            loss = sum(module.loss_weights[k] * v for k, v in terms.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _clip(module, clip)
        optimizer.step()
    if scheduler is not None:
        scheduler.step()


def training_flops(family: str, module: L.LightningModule, batch: Batch, clip: float) -> int:
    """FLOPs of one plain training batch, forward and backward (the optimiser's elementwise update is not counted)."""
    optimizer, _ = optimizers_of(module)
    with FlopCounterMode(display=False) as counter:
        plain_step(family, module, batch, optimizer, None, clip)
    return counter.get_total_flops()


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """FLOP/s of a (size x size) @ (size x size) product, the median over `repeats`: about the most dense math
    reaches on this device (its BLAS, its threads, the matmul precision in effect), measured beside the training
    steps so that both see the same machine."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / median_time(lambda: torch.mm(a, b), repeats)


def infer(family: str, module: L.LightningModule, batch: Batch) -> object:
    """The network's forward pass on a batch (what deployment runs)."""
    if family == "lstm_extractor":
        return module.net(build_inputs(batch["mixture"], batch["condition"]))
    if family == "optimized_unet":
        return module.net(batch["signal"], batch["static"])
    if family == "rawnet2":
        return module.net(batch["audio"])
    return module.run_batch(batch)


# ----------------------------------------------------------------------------------------------------------------
# timing


class StepTimer(Callback):
    """Times training batches `warmup` .. end inside a Lightning fit: from the start of the first timed batch to the
    end of the last (the fetches in between included, as in the plain loop)."""

    def __init__(self, family: str, warmup: int) -> None:
        self.family, self.warmup = family, warmup
        self.seen, self.samples = 0, 0
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self.seen == self.warmup:
            _synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.seen += 1
        if self.seen > self.warmup:
            _synchronize()
            self.end = time.perf_counter()
            self.samples += batch_samples(self.family, batch)

    def rate(self) -> float:
        """Samples per second over the timed batches (NaN when the loader ran out before any was timed)."""
        return self.samples / (self.end - self.start) if self.samples else float("nan")


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def optimizers_of(module: L.LightningModule) -> tuple[torch.optim.Optimizer, Any]:
    """A fresh optimiser and scheduler from the module's `configure_optimizers` (a trainer must be attached)."""
    config = module.configure_optimizers()
    if isinstance(config, torch.optim.Optimizer):
        return config, None
    scheduler = config.get("lr_scheduler")
    return config["optimizer"], scheduler["scheduler"] if isinstance(scheduler, Mapping) else scheduler


def plain_rate(
    family: str,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    recipe: Recipe,
    clip: float,
    device: torch.device,
) -> float:
    """Samples/s of the plain loop over the DataModule's training loader (batches `warmup` .. `warmup + steps`)."""
    module.to(device).train()  # a finished `Trainer.fit` leaves the module on the CPU
    optimizer, scheduler = optimizers_of(module)
    samples, start = 0, 0.0
    for i, batch in enumerate(datamodule.train_dataloader()):
        if i == recipe.warmup + recipe.steps:
            break
        if i == recipe.warmup:
            _synchronize()
            start = time.perf_counter()
        batch = move_data_to_device(batch, device)
        plain_step(family, module, batch, optimizer, scheduler, clip)
        if i >= recipe.warmup:
            samples += batch_samples(family, batch)
    _synchronize()
    return samples / (time.perf_counter() - start)


def lightning_trainer(
    cfg: DictConfig, batches: int, configured: bool, workdir: Path, callbacks: list[Callback], **trainer_kwargs: Any
) -> L.Trainer:
    """A one-epoch `Trainer` over `batches` training batches, bare (no logger, checkpoints or progress bar; only
    `callbacks`) or with the run's configured callbacks, curriculum and loggers added."""
    from abr_lab.train import instantiate_group  # the run's own way of building them

    loggers: list[Any] = []
    if configured:
        callbacks = [*callbacks, *instantiate_group(cfg.get("callbacks"))]
        if cfg.get("curriculum"):
            callbacks.append(hydra.utils.instantiate(cfg.curriculum, _convert_="all"))
        loggers = instantiate_group(cfg.get("logger"))
    options: dict[str, Any] = {
        "accelerator": "auto",
        "devices": 1,
        "max_epochs": 1,
        "limit_train_batches": batches,
        "limit_val_batches": 0,
        "num_sanity_val_steps": 0,
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "log_every_n_steps": cfg.trainer.get("log_every_n_steps", 50),
        "callbacks": callbacks,
        "logger": loggers or False,
        "enable_checkpointing": configured,
        "enable_progress_bar": configured,
        "enable_model_summary": False,
        "default_root_dir": str(workdir),
    }
    return L.Trainer(**(options | trainer_kwargs))


def lightning_rate(
    family: str,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
    recipe: Recipe,
    configured: bool,
    workdir: Path,
    **trainer_kwargs: Any,
) -> float:
    """Samples/s of `Trainer.fit` on the same batches, bare or with the run's configured callbacks and loggers."""
    timer = StepTimer(family, recipe.warmup)
    trainer = lightning_trainer(cfg, recipe.warmup + recipe.steps, configured, workdir, [timer], **trainer_kwargs)
    trainer.fit(module, datamodule=datamodule)
    return timer.rate()


def compile_graphs(family: str, module: L.LightningModule, batch: Batch) -> dict[str, Any]:
    """How `torch.compile` would cut the family's inference forward (`torch._dynamo.explain`, tracing only): the
    graphs, the breaks between them and why, where (`path:line reason`, counted). Every break is a return to
    Python that the compiler cannot fuse across; a reason without a break is code left to eager at the end of a
    graph (an `nn.LSTM` or `nn.GRU`: dynamo does not trace RNN modules). Run in eval mode without gradients."""
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(lambda: infer(family, module, batch))()
    torch._dynamo.reset()
    where: dict[str, int] = {}
    for reason in explained.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        place = f"{package_path(frame.filename)}:{frame.lineno}" if frame else "?"
        key = f"{place} {reason.reason.splitlines()[0][:100]}"
        where[key] = where.get(key, 0) + 1
    return {"graphs": explained.graph_count, "graph_breaks": explained.graph_break_count, "where": where}


class GraphCounter:
    """A `torch.compile` backend that counts the graphs it is handed (each compile and each recompile) and their ops,
    and runs them as traced (no code generation): what a compiled run would build, without building it."""

    def __init__(self) -> None:
        self.graphs = self.ops = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1
        self.ops += sum(node.op.startswith("call_") for node in gm.graph.nodes)
        return gm.forward


class StageGraphs(Callback):
    """Splits a `GraphCounter`'s graphs by the stage that compiled them: validation (sanity check included), test,
    and training (everything else)."""

    def __init__(self, counter: GraphCounter) -> None:
        self.counter = counter
        self.graphs = {"train": 0, "validation": 0, "test": 0}
        self._start = 0

    def _begin(self, *_: Any) -> None:
        self._start = self.counter.graphs

    def _end(self, stage: str) -> None:
        self.graphs[stage] += self.counter.graphs - self._start

    on_validation_start = on_test_start = _begin

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("validation")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end("test")

    def train_graphs(self) -> int:
        return self.counter.graphs - self.graphs["validation"] - self.graphs["test"]


FIT_EPOCHS, FIT_EVAL_BATCHES = 2, 2  # `compile_fit`: epochs, and validation / test batches of each


def compile_fit(family: str, smoke: bool, workdir: Path) -> dict[str, Any]:
    """What ``model.compile=true`` compiles over a short configured run (callbacks with the health monitor's
    attention probe, curriculum, loggers): `FIT_EPOCHS` epochs of the recipe's training batches, each followed by
    `FIT_EVAL_BATCHES` validation batches, then as many test batches. Graphs by stage and in all (a recompile, for
    a new batch size or grad mode, is one more graph; every graph is a compilation on a GPU), their ops, the graph
    breaks by reason, and what dynamo could not trace by reason (code left to eager: at a break, or the rest of a
    frame it could not resume, as after RawNet2's GRU). A fresh module, compiled as
    `abr_lab.registry.compile_network` does, with the counting backend."""
    cfg, datamodule, module = build(family, smoke, workdir)
    recipe = RECIPES[family]
    counter = GraphCounter()
    stages = StageGraphs(counter)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    module.net.compile(backend=counter)
    trainer = lightning_trainer(
        cfg,
        1 if smoke else recipe.warmup + recipe.steps,
        True,
        workdir,
        [stages],
        max_epochs=FIT_EPOCHS,
        limit_val_batches=FIT_EVAL_BATCHES,
        limit_test_batches=FIT_EVAL_BATCHES,
        num_sanity_val_steps=FIT_EVAL_BATCHES,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    counted = torch._dynamo.utils.counters
    breaks, untraced = (
        {r.splitlines()[0][:100]: n for r, n in counted[k].items()} for k in ("graph_break", "unimplemented")
    )
    torch._dynamo.reset()
    return {
        "graphs": counter.graphs,
        "ops": counter.ops,
        "by_stage": {**stages.graphs, "train": stages.train_graphs()},
        "graph_breaks": sum(breaks.values()),
        "breaks_by_reason": breaks,
        "untraced_by_reason": untraced,
    }


# ----------------------------------------------------------------------------------------------------------------
# host syncs (abr_lab.host_sync): counted apart from the timed runs, whose speed the counting would change


class SyncWindow(Callback):
    """Counts from the start of training batch `warmup` to the start of batch `warmup + steps` (or the epoch's end):
    each counted step with everything Lightning does after it (logging, progress bar); the next batch's fetch is data
    loading, which the counter leaves out."""

    def __init__(self, counter: HostSyncCounter, warmup: int, steps: int) -> None:
        self.counter, self.warmup, self.steps = counter, warmup, steps
        self.seen = self.counted = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.counter.active = self.warmup <= self.seen < self.warmup + self.steps
        self.counted += self.counter.active
        self.seen += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.counter.active = False


def lightning_syncs(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
    warmup: int,
    steps: int,
    configured: bool,
    workdir: Path,
) -> dict[str, Any]:
    """Host syncs per training step of `Trainer.fit` (`HostSyncCounter.per_step`), bare or configured; the steps
    counted are the first after `warmup` (between logging steps when the run logs every 10 or more)."""
    counter = HostSyncCounter(active=False)
    window = SyncWindow(counter, warmup, steps)
    trainer = lightning_trainer(cfg, warmup + steps + 1, configured, workdir, [window])
    with counter:
        trainer.fit(module, datamodule=datamodule)
    if not window.counted:
        raise RuntimeError(f"the training loader ran out before step {warmup}: no step was counted")
    return counter.per_step(window.counted)


def plain_syncs(family: str, module: L.LightningModule, batch: Batch, clip: float, steps: int) -> dict[str, Any]:
    """Host syncs per step of the plain loop's training step (`plain_step`) on one batch in memory."""
    optimizer, scheduler = optimizers_of(module)
    counter = HostSyncCounter()
    with counter:
        for _ in range(steps):
            plain_step(family, module, batch, optimizer, scheduler, clip)
    return counter.per_step(steps)


def rotated(names: list[str], repeat: int) -> list[str]:
    """The order of the compared loops in repeat `repeat`: each runs first, second, ... in turn. A machine that
    speeds up or slows down during a run (a CPU's clock, a neighbour's load) would otherwise favour the loop that
    always runs last: eight repeats of the LSTM recipe in a fixed order sped up from 48 to 56 samples/s, and the first
    repeat's three loops came out in their running order (48.5 / 50.8 / 51.2; throw-away probe, 2-core CPU,
    2026-12-07). Use a multiple of len(names) repeats to give each loop every place."""
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def paired_ratio(rates: list[float], baselines: list[float]) -> float:
    """The median over repeats of `rates[i] / baselines[i]`: each ratio compares two runs of one repeat, made
    back to back. This 2-core machine has slow spells of a few seconds (a throw-away probe of the LSTM recipe's plain
    step, 96 steps in a row: 0.56-0.62 s, then five at 0.72-0.73 s; 2026-12-07), each long enough to slow one run;
    a ratio of two medians over all repeats lets those spells land on either side, the median of paired ratios
    leaves out the repeats they spoil."""
    return statistics.median(r / b for r, b in zip(rates, baselines, strict=True))


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------------------------
# one family


def build(family: str, smoke: bool, workdir: Path, extra: tuple[str, ...] = ()) -> tuple[DictConfig, Any, Any]:
    """The family's config, DataModule and module. Full-size data are generated once under ./data (as for
    training); smoke-size data under `workdir`, which is thrown away."""
    recipe = RECIPES[family]
    overrides = [*(recipe.smoke if smoke else recipe.overrides), *extra]
    cfg = compose_config(overrides, output_dir=workdir / family, root_dir=workdir if smoke else Path.cwd())
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    return cfg, datamodule, module


def bench_family(
    family: str, smoke: bool, on_progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every figure of the module docstring for one family. `on_progress` gets the figures so far after each stage
    (a GPU run's compile can outlast a time limit: what was measured before it is kept)."""
    report = on_progress or (lambda _: None)
    recipe = RECIPES[family]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="abr_bench_") as tmp:
        workdir = Path(tmp)
        cfg, datamodule, module = build(family, smoke, workdir)
        if smoke:  # one of each measurement, memory at the smoke batch size
            recipe = Recipe(recipe.overrides, recipe.smoke, 1, 1, 1, (int(cfg.data.batch_size),))
        elif device.type == "cuda":  # a lent GPU's minutes go to the stages only it can measure: one turn each
            recipe = replace(recipe, repeats=min(recipe.repeats, 3))
        clip = float(cfg.trainer.get("gradient_clip_val") or 0.0)
        loops: dict[str, Callable[[], float]] = {
            "bare": lambda: lightning_rate(family, module, datamodule, cfg, recipe, False, workdir),
            "configured": lambda: lightning_rate(family, module, datamodule, cfg, recipe, True, workdir),
            "plain": lambda: plain_rate(family, module, datamodule, recipe, clip, device),
        }
        # one untimed round first: the first fit prepares the data and runs the module's setup (statistics, class
        # weights), and each loop's first run in a process is slower than its next ones (the LSTM's by ~10 %)
        for run in loops.values():
            run()
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for repeat in range(recipe.repeats):
            for name in rotated(list(loops), repeat):
                rates[name].append(loops[name]())
        median = {k: statistics.median(v) for k, v in rates.items()}
        over_plain = {k: paired_ratio(rates[k], rates["plain"]) for k in ("bare", "configured")}

        batch = move_data_to_device(next(iter(datamodule.train_dataloader())), device)
        module.to(device)
        samples = batch_samples(family, batch)
        optimizer, scheduler = optimizers_of(module)
        step_s = median_time(lambda: plain_step(family, module, batch, optimizer, scheduler, clip), recipe.repeats)
        matmul_size = 128 if smoke else 8192 if device.type == "cuda" else 2048
        matmul = matmul_flops_per_s(device, torch.float32, matmul_size, max(3, recipe.repeats))
        try:
            flops = training_flops(family, module, batch, clip)
            counted_flops = {
                "train_gflop_per_sample": flops / samples / 1e9,
                "model_gflops_per_s": flops / step_s / 1e9,  # what the plain step on a batch in memory achieves
                "model_over_matmul": flops / step_s / matmul,
            }
        except Exception as error:  # a FLOP formula failing on this device's kernels costs the FLOPs, not the row
            counted_flops = {"flops_error": f"{type(error).__name__}: {error}"[:500]}
        syncs: dict[str, Any] = {}
        if device.type == "cpu":  # the same ops on any device: a GPU's minutes go to what only it can measure
            counted = min(SYNC_STEPS, recipe.steps)
            syncs["plain"] = plain_syncs(family, module, batch, clip, counted)
            for loop, configured in (("lightning_bare", False), ("lightning_configured", True)):
                syncs[loop] = lightning_syncs(module, datamodule, cfg, recipe.warmup, counted, configured, workdir)
        data_s = data_seconds_per_batch(datamodule, recipe)
        module.eval()
        with torch.inference_mode():
            infer_s = median_time(lambda: infer(family, module, batch), max(3, recipe.repeats))
        graphs = compile_graphs(family, module, batch) if device.type == "cpu" else {}
        module.train()
        fit = compile_fit(family, smoke, workdir) if device.type == "cpu" else {}
        result: dict[str, Any] = {
            "batch_size": int(cfg.data.batch_size),
            "samples_per_batch": samples,
            "parameters": sum(p.numel() for p in module.parameters()),
            "lightning_bare_samples_per_s": median["bare"],
            "lightning_configured_samples_per_s": median["configured"],
            "plain_samples_per_s": median["plain"],
            "lightning_bare_over_plain": over_plain["bare"],
            "lightning_configured_over_plain": over_plain["configured"],
            "samples_per_s_by_repeat": rates,  # in the order measured: the spread behind each median
            "model_steps_per_s": 1.0 / step_s,
            **counted_flops,
            "matmul_gflops_per_s": matmul / 1e9,  # fp32, this device, this run
            "data_batches_per_s": 1.0 / data_s,
            "data_over_model": step_s / data_s,
            "num_workers": datamodule.train_dataloader().num_workers,  # as resolved (``auto``: by the device)
            "inference_samples_per_s": samples / infer_s,
            "inference_ms_per_batch": 1000.0 * infer_s,
            **({"host_syncs_per_step": syncs} if syncs else {}),
            **({"compile_graphs": graphs} if graphs else {}),
            **({"compile_fit": fit} if fit else {}),
            # process RSS on the CPU; on a GPU the batch scaling below reports device memory instead
            "memory": {}
            if device.type == "cuda"
            else {str(b): peak_memory(family, b, smoke) for b in recipe.memory_batches},
        }
        if device.type == "cuda":
            bf16_matmul = matmul_flops_per_s(device, torch.bfloat16, matmul_size, max(3, recipe.repeats))
            result["matmul_bf16_gflops_per_s"] = bf16_matmul / 1e9
            report(result)
            scaling = gpu_batch_scaling(family, module, batch, clip, max_factor=2 if smoke else 256)
            gpu = result["gpu"] = {"batch_scaling": scaling}
            report(result)
            # the target's figure (bf16 + compile at a batch that fills the GPU) before the recipe-batch variants:
            # each compiles the network cold (the U-Net's training step: minutes), and a time limit may stop the run
            gpu["at_full_batch"] = {}
            factor = fullest_factor(scaling, samples)
            precisions_at_batch(family, module, batch, clip, factor, gpu["at_full_batch"], lambda: report(result))
            gpu_variants(family, smoke, recipe, workdir, gpu, lambda: report(result))
    return result


def data_seconds_per_batch(datamodule: L.LightningDataModule, recipe: Recipe) -> float:
    """Seconds per batch of the training DataLoader alone (its configured workers), after its first batch."""
    loader = iter(datamodule.train_dataloader())
    next(loader)  # worker start-up and the first batch
    count, start = 0, time.perf_counter()
    for _ in range(max(recipe.steps, 3)):
        try:
            next(loader)
        except StopIteration:
            break
        count += 1
    return (time.perf_counter() - start) / max(count, 1)


class UtilisationSampler:
    """Mean GPU utilisation (percent of time a kernel ran, as NVML reports it) over a `with` block, sampled every
    `period` seconds on a thread; `mean` is NaN where NVML is missing."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # NVML (pynvml) missing or unsupported: no figure rather than no benchmark
                return

    def __enter__(self) -> UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


def gpu_variants(
    family: str, smoke: bool, recipe: Recipe, workdir: Path, out: dict[str, Any], measured: Callable[[], None]
) -> None:
    """Bare Lightning throughput and GPU utilisation in fp32, bf16-mixed, and bf16-mixed with `torch.compile`, and
    the ratios to fp32 eager, into `out` (`measured` called after each), and whether the weights stayed finite. A
    variant that fails on the machine's stack is reported with its error, not fatal."""
    for name, precision, compiled in (
        ("fp32", "32-true", False),
        ("bf16", "bf16-mixed", False),
        ("bf16_compile", "bf16-mixed", True),
    ):
        try:
            cfg, datamodule, module = build(family, smoke, workdir, extra=(f"model.compile={str(compiled).lower()}",))
            lightning_rate(family, module, datamodule, cfg, recipe, False, workdir, precision=precision)  # warm-up
            with UtilisationSampler() as sampler:
                rate = lightning_rate(family, module, datamodule, cfg, recipe, False, workdir, precision=precision)
        except Exception as error:  # e.g. a compiler failure: the other variants still get measured
            out[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]
        else:
            out[f"{name}_samples_per_s"] = rate
            out[f"{name}_gpu_utilisation_percent"] = sampler.mean
            out[f"{name}_finite"] = finite_parameters(module)
            if name != "fp32" and "fp32_samples_per_s" in out:
                out[f"{name}_over_fp32"] = rate / out["fp32_samples_per_s"]
        measured()


def finite_parameters(module: nn.Module) -> bool:
    """Whether every parameter is finite (one host read): a variant's throughput counts only if it still trains."""
    return bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all())


def tile_batch(family: str, batch: Batch, factor: int) -> Batch:
    """`factor` copies of a batch as one batch (a puzzle's pieces pointed at their own copy of the puzzle): training
    at batch sizes the benchmark's data set need not hold."""
    puzzles = int(batch["puzzle"].shape[0]) if family == "puzzle_cnn" else 0
    return {
        key: torch.cat([value + k * puzzles for k in range(factor)] if key == "puzzle_index" else [value] * factor)
        for key, value in batch.items()
    }


def gpu_batch_scaling(
    family: str, module: L.LightningModule, batch: Batch, clip: float, max_factor: int = 256, max_step_s: float = 1.0
) -> dict[str, dict[str, Any]]:
    """Plain-loop training throughput (fp32) and `torch.cuda.max_memory_allocated` as the training batch grows (tiled
    x1, x2, x4, ...) until the GPU runs out of memory, 85 % of it is taken, a step takes `max_step_s`, or
    `max_factor`: the batch sizes that fill the GPU. Keyed by training examples per batch."""
    total = torch.cuda.get_device_properties(0).total_memory
    out: dict[str, dict[str, Any]] = {}
    factor = 1
    while factor <= max_factor:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            samples, step_s = _tiled_step_seconds(family, module, batch, factor, clip)
        except torch.cuda.OutOfMemoryError:
            out[f"x{factor}"] = {"out_of_memory": True}
            break
        peak = torch.cuda.max_memory_allocated()
        out[str(samples)] = {"samples_per_s": samples / step_s, "step_s": step_s, "cuda_max_allocated_mb": peak / 2**20}
        if peak > 0.85 * total or step_s > max_step_s:
            break
        factor *= 2
    torch.cuda.empty_cache()
    return out


def fullest_factor(scaling: Mapping[str, Mapping[str, Any]], samples_per_batch: int) -> int:
    """The tiling factor of the fastest batch `gpu_batch_scaling` measured (1 when it measured none)."""
    rates = {int(b): m["samples_per_s"] for b, m in scaling.items() if "samples_per_s" in m}
    return max(rates, key=rates.get) // samples_per_batch if rates else 1


PRECISIONS = ("fp32", "bf16", "bf16_compile")


def precisions_at_batch(
    family: str,
    module: L.LightningModule,
    batch: Batch,
    clip: float,
    factor: int,
    out: dict[str, Any],
    measured: Callable[[], None],
) -> None:
    """The plain loop at a batch that keeps the GPU busy (`batch` tiled `factor` times) in fp32, under bf16 autocast,
    and under bf16 autocast with the network compiled: samples/s and the ratios to fp32. Where the bf16 + compile
    target (>= 1.5 x fp32) means something: the recipe's batch, sized for a CPU, leaves a GPU mostly idle. Compiling
    changes `module.net` in place (nothing may use `module` after it). The figures go into `out`, `measured` called
    after each variant; a variant that fails is recorded with its error, not fatal. Each variant starts from the
    same weights and records whether its steps left them finite (`<variant>_finite`): a speed-up that trains to
    NaN is none."""
    out["factor"] = factor
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for name in PRECISIONS:
        try:
            module.load_state_dict(initial)
            if name.endswith("compile"):
                module.net.compile()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=name != "fp32"):
                samples, step_s = _tiled_step_seconds(family, module, batch, factor, clip)
        except Exception as error:  # e.g. a compiler failure: the other variants still get measured
            out[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]
        else:
            out["samples_per_batch"] = samples
            out[f"{name}_samples_per_s"] = samples / step_s
            out[f"{name}_finite"] = finite_parameters(module)
            if name != "fp32" and "fp32_samples_per_s" in out:
                out[f"{name}_over_fp32"] = out[f"{name}_samples_per_s"] / out["fp32_samples_per_s"]
        measured()


def _tiled_step_seconds(
    family: str, module: L.LightningModule, batch: Batch, factor: int, clip: float
) -> tuple[int, float]:
    """Training examples in the batch tiled `factor` times, and the median seconds of a plain training step on it (a
    fresh optimiser: its state counts in the memory, and goes with it)."""
    big = tile_batch(family, batch, factor)
    optimizer, _ = optimizers_of(module)
    return batch_samples(family, big), median_time(lambda: plain_step(family, module, big, optimizer, None, clip), 3)


# ----------------------------------------------------------------------------------------------------------------
# memory: a fresh process per batch size (peak RSS is a process-lifetime high-water mark)


def peak_memory(family: str, batch_size: int, smoke: bool) -> dict[str, float]:
    """Peak memory of two training steps at `batch_size`, measured in a fresh process (`memory_probe`)."""
    cmd = [sys.executable, "-m", "abr_lab.benchmarking", family, str(batch_size), *(["--smoke"] if smoke else [])]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {family} batch {batch_size} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """The process's peak resident set size since start or since `reset_peak_rss`, MB (Linux /proc VmHWM; elsewhere
    the lifetime peak of getrusage, KB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux >= 4.0: writing 5 to /proc/self/clear_refs); a no-op elsewhere, where the
    peak then includes the data set-up."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def current_rss_mb() -> float:
    """The process's resident set size now, MB (Linux /proc; elsewhere the peak so far)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * resource.getpagesize() / 2**20


def memory_probe(family: str, batch_size: int, smoke: bool) -> dict[str, float]:
    """Run two training steps at `batch_size` (data and module ready first) and report the memory high-water marks."""
    recipe = RECIPES[family]
    with tempfile.TemporaryDirectory(prefix="abr_mem_") as tmp:
        cfg, datamodule, module = build(family, smoke, Path(tmp), extra=(f"data.batch_size={batch_size}",))
        datamodule.prepare_data()
        datamodule.setup("fit")
        before = current_rss_mb()  # imports (torch, lightning, timm: ~0.8 GB here), data and module
        reset_peak_rss()  # the peak of training, not of generating or decoding the data
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        probe = Recipe(recipe.overrides, recipe.smoke, 0, 2, 1, ())  # two steps, whatever their speed
        lightning_rate(family, module, datamodule, cfg, probe, configured=False, workdir=Path(tmp))
        out = {"peak_rss_mb": peak_rss_mb(), "rss_before_training_mb": before}
        if torch.cuda.is_available():
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ----------------------------------------------------------------------------------------------------------------
# report


def markdown_report(results: Mapping[str, Any]) -> str:
    """The results as markdown tables: environment, then one row per family, then each family's specifics."""
    env = results.get("environment", {})
    lines = [
        "# Benchmark results",
        "",
        f"`python scripts/benchmark.py`, last run {env.get('date', '?')} (each section's `measured` says when its "
        f"figures were taken; a run of some benchmarks rewrites only theirs): {env.get('processor', '?')}, "
        f"{env.get('cpu_threads', '?')} CPU threads, GPU {env.get('cuda') or 'none'}, python {env.get('python', '?')}, "
        f"torch {env.get('torch', '?')}, lightning {env.get('lightning', '?')}. Medians over repeats.",
        "",
    ]
    framework = results.get("framework", {})
    if framework:
        lines += [
            "| family | batch | samples/s plain | Lightning bare / plain | Lightning configured / plain "
            "| data / model | training GFLOP / sample | model GFLOP/s (of fp32 matmul) | inference samples/s "
            "| ms per batch | peak RSS MB by batch |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for family, r in framework.items():
            if not isinstance(r, Mapping) or "plain_samples_per_s" not in r:
                continue
            memory = ", ".join(f"{b}: {m['peak_rss_mb']:,.0f}" for b, m in r.get("memory", {}).items())
            lines.append(
                f"| {family} | {r['samples_per_batch']} | {r['plain_samples_per_s']:,.1f} "
                f"| {r['lightning_bare_over_plain']:.3f} | {r['lightning_configured_over_plain']:.3f} "
                f"| {r['data_over_model']:,.1f} | {_cell(r.get('train_gflop_per_sample', '-'))} "
                f"| {model_flops_cell(r)} | {r['inference_samples_per_s']:,.1f} "
                f"| {r['inference_ms_per_batch']:,.1f} | {memory} |"
            )
        dates = [f"{f} {r['measured']}" for f, r in framework.items() if isinstance(r, Mapping) and "measured" in r]
        lines += ["", f"Rows measured: {', '.join(dates)}."] if dates else []
        lines.append("")
        lines += sync_table(framework)
    gpu_rows = {
        family + (" (stopped early)" if r.get("partial") else ""): (r["gpu"], r.get("train_gflop_per_sample"))
        for family, r in framework.items()
        if isinstance(r, Mapping) and "gpu" in r
    }
    if gpu_rows:
        lines += [
            "GPU: bare Lightning samples/s (mean GPU utilisation %; TFLOP/s: samples/s x the training GFLOP per "
            "sample) in fp32, bf16-mixed and bf16-mixed + "
            "`torch.compile`; the same ratios for the plain loop at the fastest batch of the scaling (full batch); "
            "plain-loop fp32 training as the batch grows (samples/s, max allocated MB) up to the batch that fills "
            "the GPU.",
            "",
            "| family | fp32 | bf16 | bf16 + compile | bf16 / fp32 | bf16 + compile / fp32 "
            "| full batch: bf16 / fp32, bf16 + compile / fp32 | batch scaling |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for family, (g, gflop) in gpu_rows.items():
            cells = [gpu_variant_cell(g, v, gflop) for v in ("fp32", "bf16", "bf16_compile")]
            ratios = [_cell(g[k]) if k in g else "-" for k in ("bf16_over_fp32", "bf16_compile_over_fp32")]
            scaling = "; ".join(
                f"{b}: OOM"
                if m.get("out_of_memory")
                else f"{b}: {m['samples_per_s']:,.0f}/s {m['cuda_max_allocated_mb']:,.0f} MB"
                for b, m in g.get("batch_scaling", {}).items()
            )
            full = g.get("at_full_batch", {})
            at_full = ", ".join(full_batch_ratio(full, v) for v in ("bf16", "bf16_compile"))
            if "samples_per_batch" in full:
                at_full = f"{full['samples_per_batch']}: {at_full}"
            lines.append(f"| {family} | {' | '.join(cells)} | {' | '.join(ratios)} | {at_full} | {scaling} |")
        lines.append("")
    for name, section in results.items():
        if name in ("environment", "framework") or not isinstance(section, Mapping):
            continue
        lines += [f"## {name}", "", "| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in section.items()]
        lines.append("")
    return "\n".join(lines)


def sync_table(framework: Mapping[str, Any]) -> list[str]:
    """Markdown lines: host syncs per training step (`abr_lab.host_sync`) by family and loop, where they come from,
    and the graphs of `compile_graphs`; empty when no row has them (results from before they were counted)."""
    rows = {
        f: r["host_syncs_per_step"]
        for f, r in framework.items()
        if isinstance(r, Mapping) and "host_syncs_per_step" in r
    }
    if not rows:
        return []
    loops = ("plain", "lightning_bare", "lightning_configured")
    lines = [
        "Host syncs per training step (reads / value-shaped ops / tensors from host data), counted on any device: "
        "each read or value-shaped op stops a GPU run's host until the step's kernels are done.",
        "",
        "| family | plain loop | Lightning bare | Lightning configured | where (per step, configured) "
        "| torch.compile: graphs / breaks; why, where | compiled fit: graphs train / validation / test (ops); "
        "breaks |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for family, by_loop in rows.items():
        cells = [" / ".join(f"{by_loop[loop][k]:g}" for k in ("read", "shape", "host_data")) for loop in loops]
        where = "; ".join(f"{n:g} {w}" for w, n in by_loop["lightning_configured"]["where"].items()) or "none"
        graphs = framework[family].get("compile_graphs")
        compiled = (
            f"{graphs['graphs']} / {graphs['graph_breaks']}"
            + "".join(f"; {n} × {w}" for w, n in graphs["where"].items())
            if graphs
            else "-"
        )
        fit = framework[family].get("compile_fit")
        fitted = (
            " / ".join(str(fit["by_stage"][k]) for k in ("train", "validation", "test"))
            + f" ({fit['ops']:,}); {fit['graph_breaks']}"
            + "".join(f"; {n} × {w}" for w, n in fit["breaks_by_reason"].items())
            + "".join(f"; left to eager {n} × {w}" for w, n in fit["untraced_by_reason"].items())
            if fit
            else "-"
        )
        lines.append(f"| {family} | {' | '.join(cells)} | {where} | {compiled} | {fitted} |")
    return [*lines, ""]


def model_flops_cell(row: Mapping[str, Any]) -> str:
    """The plain training step's GFLOP/s and its share of the same run's fp32 matrix product, as a markdown cell."""
    if "model_gflops_per_s" not in row:
        return "-"
    share = f" ({100 * row['model_over_matmul']:.0f} %)" if "model_over_matmul" in row else ""
    return f"{_cell(row['model_gflops_per_s'])}{share}"


def gpu_variant_cell(gpu: Mapping[str, Any], variant: str, gflop_per_sample: float | None) -> str:
    """One GPU variant's markdown cell: samples/s (mean utilisation %, TFLOP/s where the FLOPs were counted)."""
    if f"{variant}_samples_per_s" not in gpu:
        return f"failed: {gpu[f'{variant}_error'][:80]}" if f"{variant}_error" in gpu else "not measured"
    rate = gpu[f"{variant}_samples_per_s"]
    tflops = f", {rate * gflop_per_sample / 1e3:,.1f} TFLOP/s" if gflop_per_sample else ""
    return f"{rate:,.0f} ({gpu[f'{variant}_gpu_utilisation_percent']:.0f} %{tflops}){non_finite(gpu, variant)}"


def full_batch_ratio(full: Mapping[str, Any], variant: str) -> str:
    """A variant's ratio to fp32 at the full batch (`precisions_at_batch`), "failed", or "-" (not measured)."""
    if f"{variant}_over_fp32" in full:
        return _cell(full[f"{variant}_over_fp32"]) + non_finite(full, variant)
    return "failed" if f"{variant}_error" in full else "-"


def non_finite(figures: Mapping[str, Any], variant: str) -> str:
    """A warning for a markdown cell whose variant left non-finite weights (results before the check: none)."""
    return ", weights non-finite" if figures.get(f"{variant}_finite") is False else ""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    """`python -m abr_lab.benchmarking <family> <batch size> [--smoke]`: the memory probe (prints one JSON line)."""
    args = list(sys.argv[1:] if argv is None else argv)
    smoke = "--smoke" in args
    family, batch_size = [a for a in args if a != "--smoke"]
    print(json.dumps(memory_probe(family, int(batch_size), smoke)))


if __name__ == "__main__":
    main()
