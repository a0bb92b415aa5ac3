"""DataModules of the anti-spoofing family: the clip rule on every split, the curriculum knob, random crops, and the
real-corpus DataModules on tiny fake trees (resampling, attack tables, unseen attacks, bad protocols)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from abr_lab.data import DataFileError
from abr_lab.rawnet2 import ASVspoof2019DataModule, InTheWildDataModule, SpoofSynthDataModule
from abr_lab.rawnet2.audio import fit_clip
from abr_lab.rawnet2.corpora import ASVSPOOF2019_LA_LAYOUT, ProtocolError


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> SpoofSynthDataModule:
    dm = SpoofSynthDataModule(
        data_dir=str(tmp_path_factory.mktemp("spoof_synth")),
        num_train=12,
        num_val=6,
        num_test=16,
        min_seconds=0.1,
        max_seconds=0.2,
        bonafide_fraction=0.25,
        clip_samples=4000,  # longer than every clip (<= 3,200 samples): all are tiled
        batch_size=4,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_synth_items_follow_the_reference_clip_rule(synth):
    for split in ("train", "val", "test"):
        dataset = synth.datasets[split]
        for index in range(len(dataset)):
            item = dataset[index]
            raw = synth.sources[split].load(index)
            assert item["audio"].shape == (4000,) and item["audio"].dtype == torch.float32
            np.testing.assert_array_equal(item["audio"].numpy(), fit_clip(raw, 4000))  # tiled from the start
            assert len(raw) < 4000
            assert item["label"].item() == synth.sources[split].labels[index]


def test_synth_attack_table_and_unseen_attacks(synth):
    assert synth.attack_ids[0] == "-"
    assert synth.train_attacks == ("A01", "A02", "A03", "A04")
    test = synth.sources["test"]
    present = {synth.attack_ids[i] for i in np.unique(test.attacks)} - {"-"}
    assert present <= {"A01", "A02", "A05", "A06", "A07"}
    assert set(synth.unseen_attacks) == present - {"A01", "A02"} and synth.unseen_attacks
    train_present = {synth.attack_ids[i] for i in np.unique(synth.sources["train"].attacks)} - {"-"}
    assert train_present <= set(synth.train_attacks)
    assert synth.class_counts("test")["bonafide"] == 4 and synth.class_counts("test")["spoof"] == 12


def test_held_out_val_attack_is_neither_trained_on_nor_counted_as_seen(tmp_path):
    dm = SpoofSynthDataModule(
        data_dir=str(tmp_path),
        num_train=4,
        num_val=5,
        num_test=12,
        min_seconds=0.1,
        max_seconds=0.1,
        val_attacks=["A08"],
    )
    dm.prepare_data()
    dm.setup("fit")
    val = {dm.attack_ids[i] for i in np.unique(dm.sources["val"].attacks)}
    assert val == {"-", "A08"} and dm.train_attacks == ("A01", "A02", "A03", "A04")
    assert set(dm.unseen_attacks) == {"A05", "A06", "A07"}  # A08 is not a test attack: not "unseen" either
    assert dm.hparams.val_attacks == ["A08"]  # saved with the checkpoint


def test_synth_loaders_batch_and_drop_only_the_last_train_batch(synth):
    batch = next(iter(synth.train_dataloader()))
    assert batch["audio"].shape == (4, 4000) and batch["label"].shape == (4,) and batch["attack"].dtype == torch.int64
    assert len(synth.train_dataloader()) == 3  # 12 clips / 4, drop_last changes nothing here
    assert sum(len(b["label"]) for b in synth.test_dataloader()) == 16  # evaluation never drops a clip


def test_curriculum_knob_sets_train_clip_length_only(synth):
    knob = synth.curriculum_knobs()["data.clip_samples"]
    try:
        knob.set(1000)
        assert synth.datasets["train"][0]["audio"].shape == (1000,)
        assert synth.datasets["val"][0]["audio"].shape == (4000,)
        assert next(iter(synth.train_dataloader()))["audio"].shape == (4, 1000)
    finally:
        knob.set(4000)


def _four_clips(tmp_path: Path, seconds: float, **options) -> SpoofSynthDataModule:
    """A set-up DataModule of four training clips of `seconds` each, with the given clip options."""
    dm = SpoofSynthDataModule(
        data_dir=str(tmp_path),
        num_train=4,
        num_val=2,
        num_test=2,
        min_seconds=seconds,
        max_seconds=seconds,
        batch_size=2,
        **options,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_random_crop_draws_windows_of_the_clip(tmp_path):
    dm = _four_clips(tmp_path, seconds=0.3, clip_samples=1000, random_crop=True)
    raw = dm.sources["train"].load(0)  # 4,800 samples
    torch.manual_seed(0)
    crops = [dm.datasets["train"][0]["audio"].numpy() for _ in range(8)]
    starts = set()
    for crop in crops:
        matches = [s for s in range(len(raw) - 999) if np.array_equal(raw[s : s + 1000], crop)]
        assert matches, "a random crop is a window of the clip"
        starts.add(matches[0])
    assert len(starts) > 1
    np.testing.assert_array_equal(dm.datasets["val"][0]["audio"].numpy(), dm.sources["val"].load(0)[:1000])


def test_errors_before_setup_and_bad_arguments(tmp_path):
    dm = SpoofSynthDataModule(data_dir=str(tmp_path), num_train=4, num_val=2, num_test=2)
    with pytest.raises(RuntimeError, match="split 'train' is not set up"):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match="curriculum_knobs: call setup"):
        dm.curriculum_knobs()
    with pytest.raises(DataFileError, match="missing; prepare_data"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="num_val=1"):
        SpoofSynthDataModule(data_dir=str(tmp_path), num_val=1)
    with pytest.raises(ValueError, match="batch_size=0"):
        SpoofSynthDataModule(data_dir=str(tmp_path), batch_size=0)


# ASVspoof 2019 LA on a fake tree

PROTOCOLS = {
    "train": [("T_b1", "-", 16_000), ("T_b2", "-", 16_000), ("T_s1", "A01", 16_000), ("T_s2", "A03", 8_000)],
    "val": [("D_b1", "-", 16_000), ("D_s1", "A02", 16_000)],
    "test": [("E_b1", "-", 16_000), ("E_s1", "A01", 16_000), ("E_s2", "A17", 16_000)],
}


def _fake_la(root: Path, protocols: dict = PROTOCOLS) -> None:
    for split, rows in protocols.items():
        audio_rel, protocol_rel = ASVSPOOF2019_LA_LAYOUT[split]
        (root / audio_rel).mkdir(parents=True, exist_ok=True)
        (root / protocol_rel).parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for name, system, rate in rows:
            t = np.arange(int(0.25 * rate)) / rate
            sf.write(root / audio_rel / f"{name}.flac", 0.3 * np.sin(2 * np.pi * 440 * t), rate)
            key = "bonafide" if system == "-" else "spoof"
            lines.append(f"LA_0001 {name} - {system} {key}")
        (root / protocol_rel).write_text("\n".join(lines) + "\n")


def test_asvspoof2019_datamodule_reads_resamples_and_finds_unseen_attacks(tmp_path):
    _fake_la(tmp_path)
    dm = ASVspoof2019DataModule(root=str(tmp_path), clip_samples=6000, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.train_attacks == ("A01", "A03")
    assert dm.unseen_attacks == ("A17",)
    train = dm.datasets["train"]
    assert [train[i]["label"].item() for i in range(4)] == [1, 1, 0, 0]
    assert [dm.attack_ids[train[i]["attack"].item()] for i in range(4)] == ["-", "-", "A01", "A03"]
    at_8k = train.source.load(3)
    assert len(at_8k) == 4000  # 0.25 s at 8 kHz, resampled to 16 kHz
    item = train[3]["audio"].numpy()
    np.testing.assert_allclose(item, fit_clip(at_8k, 6000), atol=1e-6)
    assert [len(b["label"]) for b in dm.test_dataloader()] == [2, 1]


def test_asvspoof2019_datamodule_refuses_unknown_system(tmp_path):
    _fake_la(tmp_path, {**PROTOCOLS, "test": [("E_b1", "-", 16_000), ("E_s9", "A42", 16_000)]})
    dm = ASVspoof2019DataModule(root=str(tmp_path), num_workers=0)
    with pytest.raises(DataFileError, match=r"test protocol names unknown systems \['A42'\]"):
        dm.setup("test")


def test_asvspoof2019_datamodule_missing_file_names_protocol_line(tmp_path):
    _fake_la(tmp_path)
    (tmp_path / ASVSPOOF2019_LA_LAYOUT["val"][0] / "D_s1.flac").unlink()
    dm = ASVspoof2019DataModule(root=str(tmp_path), num_workers=0)
    protocol = tmp_path / ASVSPOOF2019_LA_LAYOUT["val"][1]
    with pytest.raises(ProtocolError, match=re.escape(f"{protocol}:2: ") + r".*D_s1\.flac"):
        dm.setup("fit")


# In-the-Wild on a fake tree


def test_in_the_wild_datamodule_splits_by_speaker(tmp_path):
    rows = ["file,speaker,label"]
    for s in range(10):
        for k in range(2):
            name = f"{s}_{k}.wav"
            sf.write(tmp_path / name, np.full(1600, 0.1 * (s + 1), np.float32), 16_000)
            rows.append(f"{name},speaker {s},{'spoof' if k else 'bona-fide'}")
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    dm = InTheWildDataModule(root=str(tmp_path), split_fractions=(0.6, 0.2, 0.2), clip_samples=2000, num_workers=0)
    dm.setup("fit")
    speakers = {split: {u.speaker for u in dm.sources[split].utterances} for split in ("train", "val", "test")}
    assert sum(len(s) for s in speakers.values()) == 10
    assert not (speakers["train"] & speakers["test"]) and not (speakers["val"] & speakers["test"])
    assert dm.unseen_attacks == ()  # spoofs carry no system: nothing in test is unseen
    item = dm.datasets["test"][0]
    assert item["audio"].shape == (2000,) and dm.attack_ids[item["attack"].item()] in ("-", "spoof")
    with pytest.raises(ValueError, match="three shares"):
        InTheWildDataModule(root=str(tmp_path), split_fractions=(0.5, 0.5))


def test_rawboost_degrades_training_clips_only(tmp_path):
    dm = _four_clips(tmp_path, seconds=0.2, clip_samples=3200, rawboost=["lnl", "isd"])
    raw = dm.sources["train"].load(0)
    torch.manual_seed(0)
    first, second = dm.datasets["train"][0]["audio"].numpy(), dm.datasets["train"][0]["audio"].numpy()
    assert not np.allclose(first, raw) and not np.array_equal(first, second)  # a fresh draw every time
    np.testing.assert_array_equal(dm.datasets["val"][0]["audio"].numpy(), dm.sources["val"].load(0))
    with pytest.raises(ValueError, match="unknown RawBoost"):
        SpoofSynthDataModule(data_dir=str(tmp_path), rawboost=["reverb"])
