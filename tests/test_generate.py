"""generate.py and `generate_joint` on a tiny U-Net trained with `experiment=unet_joint`: an ABR file in the data
schema, reproducible by seed, parameters inside the train split's settings, the heads' reading as labels; the
generated waterfall reaches TensorBoard; bad arguments and models without generation are refused by name."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from abr_lab.checkpoint import checkpoint_config, instantiate_datamodule, load_module
from abr_lab.config import compose_config
from abr_lab.generate import generate, main
from abr_lab.optimized_unet.schema import CLASS_NAMES, ABRRecords, read_abr_file
from abr_lab.train import train
from tests.conftest import TINY_UNET_CHECKPOINT

# the tiny checkpoint config with generation, and both waterfalls and every step logged to TensorBoard
TINY_JOINT = [
    *[o for o in TINY_UNET_CHECKPOINT if o != "logger=none"],
    "experiment=unet_joint",
    "model.diffusion.sample_steps=2",
    "trainer.log_every_n_steps=1",
    "callbacks.waterfall.every_n_epochs=1",
    "callbacks.generated_waterfall.every_n_epochs=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The checkpoint of a tiny joint run, and its run directory."""
    root = tmp_path_factory.mktemp("joint")
    summary = train(compose_config(TINY_JOINT, output_dir=root / "run", root_dir=root))
    return Path(summary["best_checkpoint"]), root / "run"


def test_training_logs_the_diffusion_loss_and_a_generated_waterfall(trained: tuple[Path, Path]) -> None:
    _, run = trained
    (event_dir,) = {p.parent for p in (run / "tensorboard").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(event_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "val/generated_waterfall" in events.Tags()["images"]
    assert {"train/loss_diffusion", "val/loss_diffusion"} <= set(events.Tags()["scalars"])


def test_generate_joint_returns_signals_parameters_and_the_heads_reading(trained: tuple[Path, Path]) -> None:
    ckpt, _ = trained
    module = load_module(ckpt, checkpoint_config(ckpt))
    out = module.generate_joint(5, temperature=0.5, generator=torch.Generator().manual_seed(0))
    t = module.net.signal_length
    assert out["signal"].shape == (5, t) and out["static"].shape == (5, 4) and out["label"].shape == (5,)
    assert out["peaks_pred"].shape == (5, 3, 2) and out["class_prob"].shape == (5, len(CLASS_NAMES))
    assert torch.isfinite(out["signal"]).all() and module.prior.inside(out["static"]).all()
    # the heads' reading is the analysis path on the generated signal
    static = module.prior.normalise(out["static"])
    again = module.predict(module.net((out["signal"] / module.signal_std).unsqueeze(1), static))
    torch.testing.assert_close(again["threshold_pred"], out["threshold_pred"], atol=1e-4, rtol=1e-4)


def test_generate_writes_a_reproducible_file_in_the_schema(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    a = read_abr_file(generate(ckpt, 7, tmp_path / "a.h5", seed=3, batch_size=4))
    b = read_abr_file(generate(ckpt, 7, tmp_path / "b.h5", seed=3, batch_size=4))
    c = read_abr_file(generate(ckpt, 7, tmp_path / "c.h5", seed=4, batch_size=4))
    assert len(a) == 7 and a.num_samples == load_module(ckpt, checkpoint_config(ckpt)).net.signal_length
    np.testing.assert_array_equal(a.signal, b.signal)
    assert not np.allclose(a.signal, c.signal)
    assert (a.peaks[~a.peak_mask] == 0).all()  # absent waves carry no peak, as the schema says
    assert len(set(a.patient_id.tolist())) == 7


def test_generate_a_chosen_class(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    module = load_module(ckpt, checkpoint_config(ckpt))
    present = [c for c in range(len(CLASS_NAMES)) if module.prior.class_prob[c] > 0]
    records = read_abr_file(generate(ckpt, 4, tmp_path / "x.h5", label=present[-1]))
    assert (records.label == present[-1]).all()


def test_bad_arguments_are_refused_by_name(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    with pytest.raises(SystemExit, match="unknown option 'colour'"):
        main([f"ckpt_path={ckpt}", "n=2", f"out={tmp_path / 'x.h5'}", "colour=red"])
    with pytest.raises(SystemExit, match="n, out: required"):
        main([f"ckpt_path={ckpt}"])
    with pytest.raises(SystemExit, match="label='WORST'"):
        main([f"ckpt_path={ckpt}", "n=2", f"out={tmp_path / 'x.h5'}", "label=WORST"])
    with pytest.raises(SystemExit, match="ending in .h5"):
        main([f"ckpt_path={ckpt}", "n=2", f"out={tmp_path / 'x.csv'}"])
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_model_trained_without_generation_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root = trained[1].parent  # the fixture's simulated file: not generated again
    summary = train(compose_config(TINY_UNET_CHECKPOINT, output_dir=tmp_path / "run", root_dir=root))
    with pytest.raises(ValueError, match="trained without generation"):
        generate(summary["best_checkpoint"], 2, tmp_path / "x.h5")


def test_command_line_prints_where_it_wrote(trained: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ckpt, _ = trained
    main([f"ckpt_path={ckpt}", "n=3", f"out={tmp_path / 'g.h5'}", "steps=1", "use_constraints=false"])
    assert "3 generated recordings written to" in capsys.readouterr().out
    assert len(read_abr_file(tmp_path / "g.h5")) == 3


def test_generation_report_writes_every_figure(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, _ = trained
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import generation_report

    out = tmp_path / "report.json"
    args = generation_report.parse([f"ckpt_path={ckpt}", "steps=1", "batch_size=64", f"out={out}"])
    result = generation_report.report(args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["split"] == "test" and result["recordings"] == len(_split_records(ckpt, "test"))
    assert set(result["frechet_distance"]) == {
        "real A vs real B (floor)",
        "real A vs generated B",
        "real A vs class-and-level mean B (baseline)",
    }
    assert "data (labels)" in result["latency_slope_ms_per_db"] and result["presence_v_by_class"]
    assert (tmp_path / "generated_waterfall.png").stat().st_size > 0


def _split_records(ckpt: Path, split: str) -> ABRRecords:
    datamodule = instantiate_datamodule(checkpoint_config(ckpt))
    datamodule.setup("fit")
    return datamodule.split_records(split)


def test_generation_report_reads_the_validation_split_when_asked(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Sampling settings are chosen on `split=val`; its report goes to its own file, never over the test one's."""
    ckpt, run = trained
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import generation_report

    result = generation_report.report(generation_report.parse([f"ckpt_path={ckpt}", "split=val", "steps=1"]))
    assert result["split"] == "val" and result["recordings"] == len(_split_records(ckpt, "val"))
    assert json.loads((run / "generation_report_val.json").read_text())["split"] == "val"
    with pytest.raises(SystemExit, match="split='train'"):
        generation_report.parse([f"ckpt_path={ckpt}", "split=train"])
