"""Training-health monitor (`abr_lab.health`) and the attention entropy probe, on a tiny two-task toy.

The toy: each sample is 8 tokens of 8 features; one token is marked (feature 0 = 3, 0 elsewhere) and both targets
are read from it: a regression target (a linear function of its features, plus noise) and a balanced 3-class label
(which of three directions 120° apart its features 3 and 4 point closest to). The network (embedding, one
`ProbedAttention` self-attention layer with a residual, mean-pool, a regression head and a class head) must learn
to attend to the marked token, so a healthy run's attention leaves the uniform regime within an epoch.

The healthy toy raises no alert at all; each `fault` breaks it in one way and the matching alert must fire:

- ``nan_loss``: the returned loss is NaN from step `NAN_FROM_STEP` (a constant NaN is added, so gradients stay
  finite and nothing else breaks) -> ``nonfinite`` on ``train/loss``;
- ``nan_metric``: ``val/r2`` is logged as NaN from epoch `NAN_METRIC_EPOCH` -> ``nonfinite`` on ``val/r2``;
- ``constant``: the heads see zeros, so they predict their biases -> ``class_collapse``, ``zero_recall`` and
  ``negative_r2``;
- ``one_hot_attention``: query/key projections start 50x too large -> ``attention_collapse``;
- ``dominant``: the regression loss is weighted 1e4 -> ``task_dominance`` (loss share and gradient share);
- ``detached_head``: the class head's output is detached, so its parameters get no gradient -> ``dead_head``;
- ``nan_loss_rank1``: as ``nan_loss``, but only in the second of two DDP processes -> both stop after the same step.

Monitor settings are those of conf/callbacks/default.yaml (warm-up 1 epoch, patience 2, default thresholds) except
`interval=1` (a toy epoch has only 16 steps; the default 100 would probe gradients once per run).
"""

from __future__ import annotations

import csv
import functools
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from abr_lab.health import HealthMonitor, receives_gradient, task_gradient_norms
from abr_lab.layers import ProbedAttention, attention_entropy

REPO = Path(__file__).resolve().parents[1]
TOKENS, FEATURES, HEADS = 8, 8, 2
CLASSES = ("a", "b", "c")
NUM_TRAIN, NUM_VAL, BATCH_SIZE = 256, 128, 16
EPOCHS = 4
STEPS_PER_EPOCH = NUM_TRAIN // BATCH_SIZE
NAN_FROM_STEP = 5
NAN_METRIC_EPOCH = 1
# q/k projections at 2x PyTorch's default: attention starts slightly selective (entropy ~0.95 rather than ~0.996),
# so a run whose encoder gets no gradient at all (`constant`) does not also stay "uniform".
ATTENTION_SCALE = {"healthy": 2.0, "one_hot_attention": 50.0}
FAULTS = ("nan_loss", "nan_metric", "constant", "one_hot_attention", "dominant", "detached_head", "nan_loss_rank1")


# ----------------------------------------------------------------------------------------------------------------
# the toy


@functools.cache
def toy_data(num: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(x (N, L, D), regression target (N,), class (N,)), all read from one marked token per sample."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, TOKENS, FEATURES, generator=g)
    x[:, :, 0] = 0.0
    marked = torch.randint(0, TOKENS, (num,), generator=g)
    x[torch.arange(num), marked, 0] = 3.0
    token = x[torch.arange(num), marked]  # (N, D)
    y = token @ torch.tensor([0.0, 1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0]) / 1.5 + 0.3 * torch.randn(num, generator=g)
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    label = (token[:, 3:4] * angles.cos() + token[:, 4:5] * angles.sin()).argmax(-1)
    return x, y, label


def toy_loaders() -> tuple[DataLoader, DataLoader]:
    train = DataLoader(
        TensorDataset(*toy_data(NUM_TRAIN, seed=1)),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(TensorDataset(*toy_data(NUM_VAL, seed=2)), batch_size=32)
    return train, val


class Encoder(nn.Module):
    """Embedding, then one residual self-attention layer over the tokens, then mean-pool: (B, L, D) -> (B, D)."""

    def __init__(self, attention_scale: float) -> None:
        super().__init__()
        self.embed = nn.Linear(FEATURES, FEATURES)
        self.attention = ProbedAttention(FEATURES, HEADS, batch_first=True)
        with torch.no_grad():
            self.attention.in_proj_weight[: 2 * FEATURES] *= attention_scale  # query and key projections

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = h + self.attention(h, h, h)[0]
        return h.mean(dim=1)


class ToyModule(L.LightningModule):
    """The two-task toy with the monitor's optional API; `fault` (one of `FAULTS`) breaks it in one way."""

    def __init__(self, fault: str | None = None) -> None:
        super().__init__()
        assert fault is None or fault in FAULTS, fault
        self.fault = fault
        self.encoder = Encoder(ATTENTION_SCALE.get(fault or "", ATTENTION_SCALE["healthy"]))
        self.reg_head = nn.Linear(FEATURES, 1)
        self.cls_head = nn.Linear(FEATURES, len(CLASSES))
        self.weights = {"regression": 1e4 if fault == "dominant" else 1.0, "class": 1.0}
        self.task_losses: dict[str, Tensor] = {}
        self._val: dict[str, list[Tensor]] = {}

    # the monitor's optional API
    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def task_heads(self) -> dict[str, nn.Module]:
        return {"regression": self.reg_head, "class": self.cls_head}

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(x)
        if self.fault == "constant":
            features = features * 0.0
        logits = self.cls_head(features)
        if self.fault == "detached_head":
            logits = logits.detach()
        return self.reg_head(features).squeeze(-1), logits

    def losses(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x, y, label = batch
        pred, logits = self(x)
        losses = {"regression": F.mse_loss(pred, y), "class": F.cross_entropy(logits, label)}
        return {task: self.weights[task] * loss for task, loss in losses.items()}, pred, logits

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        self.task_losses, _, _ = self.losses(batch)
        loss = sum(self.task_losses.values())
        nan_here = self.fault == "nan_loss" or (self.fault == "nan_loss_rank1" and self.global_rank == 1)
        if nan_here and self.global_step >= NAN_FROM_STEP:
            loss = loss + torch.tensor(math.nan)  # NaN value, finite gradients
        self.log("train/loss", loss)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {"pred": [], "y": [], "predicted": [], "label": []}

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        losses, pred, logits = self.losses(batch)
        self.log("val/loss", sum(losses.values()), on_epoch=True)
        for key, value in zip(
            ("pred", "y", "predicted", "label"), (pred, batch[1], logits.argmax(-1), batch[2]), strict=True
        ):
            self._val[key].append(value)

    def on_validation_epoch_end(self) -> None:
        pred, y, predicted, label = (torch.cat(self._val[k]) for k in ("pred", "y", "predicted", "label"))
        r2 = 1 - (y - pred).pow(2).sum() / (y - y.mean()).pow(2).sum()
        if self.fault == "nan_metric" and self.current_epoch >= NAN_METRIC_EPOCH:
            r2 = torch.tensor(math.nan)
        metrics = {"val/r2": float(r2)}
        for k, name in enumerate(CLASSES):
            metrics[f"val/class/pred_share_{name}"] = float((predicted == k).float().mean())
            metrics[f"val/class/recall_{name}"] = float((predicted[label == k] == k).float().mean())
        self.log_dict(metrics)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-2)


# ----------------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy CPU they make these fits ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_monitor(dirpath: Path, **overrides: Any) -> HealthMonitor:
    """The monitor as configured in conf/callbacks/default.yaml, but probing gradients every step."""
    settings: dict[str, Any] = {"interval": 1, "warmup_epochs": 1, "patience": 2, **overrides}
    return HealthMonitor(dirpath=str(dirpath), **settings)


def toy_trainer(root: Path, callbacks: list[L.Callback], epochs: int = EPOCHS, **settings: Any) -> L.Trainer:
    """A quiet CPU trainer for the toy (one process unless `settings` say otherwise)."""
    defaults: dict[str, Any] = {"accelerator": "cpu", "devices": 1, "logger": False}
    return L.Trainer(
        **{**defaults, **settings},
        callbacks=callbacks,
        default_root_dir=root,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        max_epochs=epochs,
        num_sanity_val_steps=0,
    )


def fit(
    model: L.LightningModule, monitor: HealthMonitor, root: Path, epochs: int = EPOCHS, logger: Any = False
) -> L.Trainer:
    trainer = toy_trainer(root, [monitor], epochs, logger=logger, log_every_n_steps=1)
    trainer.fit(model, *toy_loaders())
    return trainer


def run_fault(fault: str | None, root: Path, epochs: int = EPOCHS, **overrides: Any) -> tuple[HealthMonitor, L.Trainer]:
    torch.manual_seed(0)
    monitor = make_monitor(root, **overrides)
    trainer = fit(ToyModule(fault), monitor, root, epochs=epochs)
    return monitor, trainer


def kinds(monitor: HealthMonitor) -> set[str]:
    return {alert.kind for alert in monitor.alerts}


def subjects(monitor: HealthMonitor, kind: str) -> set[str]:
    return {alert.subject for alert in monitor.alerts if alert.kind == kind}


# ----------------------------------------------------------------------------------------------------------------
# the healthy toy


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[HealthMonitor, Path]:
    """The healthy toy trained for `EPOCHS` epochs with a CSV logger: (monitor, metrics.csv)."""
    root = tmp_path_factory.mktemp("healthy")
    torch.manual_seed(0)
    monitor = make_monitor(root)
    logger = CSVLogger(root, name="csv", version=0)
    fit(ToyModule(), monitor, root, logger=logger)
    return monitor, Path(logger.log_dir) / "metrics.csv"


def test_healthy_toy_raises_no_alert(healthy_run: tuple[HealthMonitor, Path]) -> None:
    monitor, _ = healthy_run
    assert monitor.alerts == []
    assert not (Path(monitor.dirpath) / "alerts.jsonl").exists()


def test_health_scalars_are_logged(healthy_run: tuple[HealthMonitor, Path]) -> None:
    _, metrics_csv = healthy_run
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    expected = {
        f"health/{kind}/{task}" for kind in ("loss_share", "grad_share") for task in ("regression", "class")
    } | {"health/attention_entropy/encoder.attention", "health/alerts"}
    assert expected <= columns
    entropies = [
        float(r["health/attention_entropy/encoder.attention"])
        for r in rows
        if r["health/attention_entropy/encoder.attention"]
    ]
    assert len(entropies) == EPOCHS
    assert all(0.05 < e < 0.98 for e in entropies)  # the healthy toy's attention chooses, but not one key only


# ----------------------------------------------------------------------------------------------------------------
# one fault, one alert


@pytest.mark.parametrize("stop_on", [["nonfinite"], []])
def test_nan_loss_is_reported_and_stops_when_asked(tmp_path: Path, stop_on: list[str]) -> None:
    monitor, trainer = run_fault("nan_loss", tmp_path, stop_on=stop_on)
    assert kinds(monitor) == {"nonfinite"}
    assert subjects(monitor, "nonfinite") == {"train/loss"}
    first = monitor.alerts[0]
    assert first.epoch == 0 and "first at step" in first.message
    planned = EPOCHS * STEPS_PER_EPOCH
    if stop_on:  # stopped on the step after the first NaN
        assert trainer.global_step == NAN_FROM_STEP + 1 < planned
        assert len(monitor.alerts) == 1
    else:  # runs to the end, warning once per epoch
        assert trainer.global_step == planned
        assert [a.epoch for a in monitor.alerts] == list(range(EPOCHS))


def test_nan_loss_names_the_step_the_logger_shows(tmp_path: Path) -> None:
    # the loss of the batch trained at global_step 5 is logged (TensorBoard, CSV) at step 5
    monitor, _ = run_fault("nan_loss", tmp_path, epochs=1)
    assert f"first at step {NAN_FROM_STEP})" in monitor.alerts[0].message


def test_nan_validation_metric_is_reported_with_its_epoch(tmp_path: Path) -> None:
    monitor, trainer = run_fault("nan_metric", tmp_path)
    assert kinds(monitor) == {"nonfinite"}
    assert subjects(monitor, "nonfinite") == {"val/r2"}
    first = monitor.alerts[0]
    assert first.epoch == NAN_METRIC_EPOCH and f"at epoch {NAN_METRIC_EPOCH}" in first.message
    assert trainer.global_step == (NAN_METRIC_EPOCH + 1) * STEPS_PER_EPOCH  # stop_on=nonfinite: ends that epoch


def test_constant_predictions_collapse_to_one_class(tmp_path: Path) -> None:
    monitor, _ = run_fault("constant", tmp_path)
    assert kinds(monitor) == {"class_collapse", "zero_recall", "negative_r2"}
    collapse = [a for a in monitor.alerts if a.kind == "class_collapse"]
    assert collapse[0].subject == "val/class" and collapse[0].value == 1.0
    assert collapse[0].epoch == 2  # warm-up epoch 0, then epochs 1 and 2 in a row
    assert len(subjects(monitor, "zero_recall")) == len(CLASSES) - 1  # every class but the one predicted
    assert subjects(monitor, "zero_recall") <= {f"val/class/recall_{name}" for name in CLASSES}
    assert subjects(monitor, "negative_r2") == {"val/r2"}


def test_one_hot_attention_is_reported_by_layer(tmp_path: Path) -> None:
    monitor, _ = run_fault("one_hot_attention", tmp_path)
    assert kinds(monitor) == {"attention_collapse"}
    assert subjects(monitor, "attention_collapse") == {"encoder.attention"}
    assert all(a.value is not None and a.value < 0.05 for a in monitor.alerts)


def test_dominant_task_is_reported(tmp_path: Path) -> None:
    monitor, _ = run_fault("dominant", tmp_path)
    assert kinds(monitor) == {"task_dominance"}
    assert subjects(monitor, "task_dominance") == {"loss_share/regression", "grad_share/regression"}
    assert all("'regression'" in a.message and a.value > 0.9 for a in monitor.alerts)


def test_detached_head_is_reported_at_once(tmp_path: Path) -> None:
    # two epochs: dead_head fires on the first probed step, before any warm-up/patience check could complete
    # (over a longer run the dead task's zero gradient share would also show up as task_dominance)
    monitor, _ = run_fault("detached_head", tmp_path, epochs=2)
    assert kinds(monitor) == {"dead_head"}
    assert subjects(monitor, "dead_head") == {"class"}
    assert [(a.epoch, a.step) for a in monitor.alerts] == [(0, 0), (1, STEPS_PER_EPOCH)]


# ----------------------------------------------------------------------------------------------------------------
# alerts.jsonl and configuration


def test_alerts_are_appended_to_jsonl_across_runs(tmp_path: Path) -> None:
    run_fault("detached_head", tmp_path, epochs=1)  # one dead_head alert
    run_fault("nan_loss", tmp_path, epochs=1)  # one nonfinite alert, then stops
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["kind"], r["subject"]) for r in records] == [("dead_head", "class"), ("nonfinite", "train/loss")]
    for record in records:
        assert set(record) == {"kind", "subject", "epoch", "step", "value", "message"}
        assert record["epoch"] == 0
    assert records[0]["value"] == 0.0 and records[0]["step"] == 0
    assert records[1]["value"] is None  # NaN is written as null (valid JSON)
    assert records[1]["step"] == NAN_FROM_STEP + 1


def test_unknown_stop_on_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="'nonfinte'"):
        HealthMonitor(stop_on=["nonfinite", "nonfinte"])


# ----------------------------------------------------------------------------------------------------------------
# measurements


def test_attention_entropy_hand_cases() -> None:
    uniform = torch.full((2, 3, 5), 1 / 5)  # (B, L, S)
    assert attention_entropy(uniform).item() == pytest.approx(1.0)
    one_hot = torch.zeros(2, 3, 5)
    one_hot[..., 2] = 1.0
    assert attention_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_entropy(torch.ones(2, 3, 1)) is None  # one key: no choice to make
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # two of four keys: log 2 / log 4
    assert attention_entropy(half).item() == pytest.approx(0.5)


def test_probed_attention_is_a_drop_in_multihead_attention() -> None:
    torch.manual_seed(0)
    probed = ProbedAttention(FEATURES, HEADS, batch_first=True).eval()
    plain = nn.MultiheadAttention(FEATURES, HEADS, batch_first=True).eval()
    assert probed.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(probed.state_dict())
    x = torch.randn(3, TOKENS, FEATURES)
    expected = plain(x, x, x, need_weights=False)[0]
    out = probed(x, x, x, need_weights=False)[0]
    assert probed.entropy is None  # nothing recorded without the probe
    probed.probe = True
    out_probed = probed(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out_probed, expected)
    assert probed.entropy is not None and 0.0 < probed.entropy.item() < 1.0
    mask = torch.zeros(3, TOKENS, dtype=torch.bool)
    mask[:, -1] = True  # a positional key_padding_mask, as nn.MultiheadAttention accepts it
    torch.testing.assert_close(probed(x, x, x, mask)[0], plain(x, x, x, mask)[0])


def test_entropy_of_a_gated_off_layer_is_not_recorded() -> None:
    """A layer whose block was gated off reports NaN (`gated_entropy`): no entropy, hence no alert, for it."""
    monitor = HealthMonitor()
    net = nn.ModuleDict({"on": ProbedAttention(FEATURES, HEADS), "off": ProbedAttention(FEATURES, HEADS)})
    trainer = SimpleNamespace(sanity_checking=False)
    monitor.on_validation_batch_start(trainer, net, None, 0)
    assert net["on"].probe and net["off"].probe
    net["on"].entropy, net["off"].entropy = torch.tensor(0.5), torch.tensor(math.nan)
    monitor.on_validation_batch_end(trainer, net, None, None, 0)
    assert monitor._entropy == {"on": 0.5}
    assert not net["on"].probe and net["off"].entropy is None


def test_task_gradient_norms_hand_case() -> None:
    w = nn.Parameter(torch.ones(4))
    other = nn.Parameter(torch.ones(2))
    losses = {"three": 3 * w.sum(), "unused": other.sum(), "constant": torch.tensor(1.0)}
    norms = task_gradient_norms(losses, [w])
    assert norms == pytest.approx({"three": 6.0, "unused": 0.0, "constant": 0.0})
    losses["three"].backward()  # the graph is kept for the real backward pass
    assert torch.equal(w.grad, torch.full((4,), 3.0))


def test_task_gradient_norms_without_trainable_parameters() -> None:
    w = nn.Parameter(torch.ones(4))
    assert task_gradient_norms({"a": w.sum(), "b": 2 * w.sum()}, []) == {"a": 0.0, "b": 0.0}


def test_receives_gradient() -> None:
    head = nn.Linear(3, 1)
    assert not receives_gradient(head.parameters())  # no backward yet
    head(torch.zeros(2, 3)).sum().backward()  # zero input: weight grad 0, bias grad 2
    assert receives_gradient(head.parameters())
    assert not receives_gradient([head.weight])
    head.zero_grad(set_to_none=False)
    assert not receives_gradient(head.parameters())


# ----------------------------------------------------------------------------------------------------------------
# DDP: a stop decided in one process is taken by all


class FinalStep(L.Callback):
    """Writes each process's final global step to `rank<N>.json` in `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (self.root / f"rank{trainer.global_rank}.json").write_text(json.dumps({"step": trainer.global_step}))


class ToyData(L.LightningDataModule):
    """The toy's loaders, made in each process (spawned processes would otherwise receive the tensors pickled)."""

    def train_dataloader(self) -> DataLoader:
        return toy_loaders()[0]

    def val_dataloader(self) -> DataLoader:
        return toy_loaders()[1]


def ddp_nan_run(root: str) -> None:
    """The `nan_loss_rank1` toy on two spawned CPU processes (run in a subprocess by the test below)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monitor, final_step = make_monitor(Path(root)), FinalStep(Path(root))
    trainer = toy_trainer(Path(root), [monitor, final_step], devices=2, strategy="ddp_spawn")
    trainer.fit(ToyModule("nan_loss_rank1"), datamodule=ToyData())


def test_a_nan_loss_in_one_ddp_process_stops_every_process_after_the_same_step(tmp_path: Path) -> None:
    # Without a shared decision the process that saw the NaN would stop alone and the other would wait forever in
    # its next gradient all-reduce: the timeout turns such a hang into a failure.
    code = f"from tests.test_health import ddp_nan_run; ddp_nan_run({str(tmp_path)!r})"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]  # which process failed, and where
    steps = {json.loads(p.read_text())["step"] for p in tmp_path.glob("rank*.json")}
    assert len(list(tmp_path.glob("rank*.json"))) == 2
    assert steps == {NAN_FROM_STEP + 1}  # both stopped after the first NaN step (interval=1)
    records = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["subject"]) for r in records] == [("nonfinite", "train/loss")]  # rank 0 reports rank 1's
    assert f"first at step {NAN_FROM_STEP})" in records[0]["message"]
