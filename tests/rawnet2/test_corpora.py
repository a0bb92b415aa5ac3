"""Corpus readers on tiny fake trees: ASVspoof 2019 LA protocols, In-the-Wild meta.csv, speaker-disjoint splits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from abr_lab.rawnet2.corpora import (
    ASVSPOOF2019_LA_LAYOUT,
    ProtocolError,
    Utterance,
    asvspoof2019_la,
    read_asvspoof_protocol,
    read_in_the_wild,
    split_by_speaker,
)

PROTOCOL = """\
LA_0079 LA_T_1138215 - - bonafide
LA_0079 LA_T_1004644 - A01 spoof

LA_0080 LA_T_2000001 - A19 spoof
"""


def _write_audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(3200, np.float32), 16_000)  # 0.2 s at 16 kHz


def _fake_protocol(tmp_path: Path, text: str = PROTOCOL, names: tuple[str, ...] | None = None) -> tuple[Path, Path]:
    audio_dir = tmp_path / "flac"
    audio_dir.mkdir(exist_ok=True)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and (names is None or fields[1] in names):
            _write_audio(audio_dir / f"{fields[1]}.flac")
    protocol = tmp_path / "protocol.txt"
    protocol.write_text(text)
    return protocol, audio_dir


# ASVspoof 2019 LA


def test_protocol_parsing(tmp_path):
    protocol, audio_dir = _fake_protocol(tmp_path)
    utts = read_asvspoof_protocol(protocol, audio_dir)
    assert utts == [
        Utterance(audio_dir / "LA_T_1138215.flac", 1, "LA_0079", "-"),
        Utterance(audio_dir / "LA_T_1004644.flac", 0, "LA_0079", "A01"),
        Utterance(audio_dir / "LA_T_2000001.flac", 0, "LA_0080", "A19"),
    ]


def test_protocol_other_suffix(tmp_path):
    (tmp_path / "wav").mkdir()
    _write_audio(tmp_path / "wav" / "LA_T_1.wav")
    (tmp_path / "p.txt").write_text("LA_0001 LA_T_1 - - bonafide\n")
    (utt,) = read_asvspoof_protocol(tmp_path / "p.txt", tmp_path / "wav", suffix=".wav")
    assert utt.path == tmp_path / "wav" / "LA_T_1.wav"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (PROTOCOL + "LA_0080 LA_T_3 - A01\n", r"expected 5 fields .* at {p}:5, got 4: 'LA_0080 LA_T_3 - A01'"),
        (PROTOCOL + "LA_0080 LA_T_3 - A01 spoof extra\n", r"at {p}:5, got 6"),
        (PROTOCOL.replace("- - bonafide", "- - genuine"), r"unknown key 'genuine' at {p}:1, expected bonafide\|spoof"),
        (PROTOCOL + "LA_0081 LA_T_1004644 - A02 spoof\n", r"duplicate file 'LA_T_1004644' at {p}:5 .*line 2"),
    ],
)
def test_protocol_errors_name_path_and_line(tmp_path, text, pattern):
    protocol, audio_dir = _fake_protocol(tmp_path, text)
    with pytest.raises(ProtocolError, match=pattern.format(p=re.escape(str(protocol)))):
        read_asvspoof_protocol(protocol, audio_dir)


def test_protocol_missing_audio_counts_and_names_first(tmp_path):
    lines = [f"LA_0001 LA_T_{i} - A01 spoof" for i in range(8)]
    protocol, audio_dir = _fake_protocol(tmp_path, "\n".join(lines) + "\n", names=("LA_T_0",))
    with pytest.raises(ProtocolError) as info:
        read_asvspoof_protocol(protocol, audio_dir)
    msg = str(info.value)
    assert msg.startswith(f"7 audio file(s) listed in {protocol} do not exist")
    assert f"{protocol}:2: {audio_dir / 'LA_T_1.flac'}" in msg
    assert "LA_T_5.flac" in msg and "LA_T_6.flac" not in msg
    assert "(and 2 more)" in msg


def test_protocol_missing_paths(tmp_path):
    protocol, audio_dir = _fake_protocol(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_asvspoof_protocol(tmp_path / "nope.txt", audio_dir)
    with pytest.raises(FileNotFoundError, match="nodir"):
        read_asvspoof_protocol(protocol, tmp_path / "nodir")


def _fake_la_root(root: Path) -> None:
    for split, (audio_rel, protocol_rel) in ASVSPOOF2019_LA_LAYOUT.items():
        name = f"LA_{split}_1"
        _write_audio(root / audio_rel / f"{name}.flac")
        (root / protocol_rel).parent.mkdir(parents=True, exist_ok=True)
        (root / protocol_rel).write_text(f"LA_0001 {name} - - bonafide\n")


def test_asvspoof2019_la_layout(tmp_path):
    _fake_la_root(tmp_path)
    for split in ("train", "val", "test"):
        (utt,) = asvspoof2019_la(tmp_path, split)
        assert utt.path.name == f"LA_{split}_1.flac" and utt.label == 1
    assert asvspoof2019_la(str(tmp_path), "val")[0].path.parent == tmp_path / "ASVspoof2019_LA_dev" / "flac"


def test_asvspoof2019_la_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown ASVspoof 2019 LA split 'dev'.*train\\|val\\|test"):
        asvspoof2019_la(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="root folder not found: .*nowhere"):
        asvspoof2019_la(tmp_path / "nowhere", "train")
    _fake_la_root(tmp_path)
    (tmp_path / ASVSPOOF2019_LA_LAYOUT["test"][1]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / ASVSPOOF2019_LA_LAYOUT["test"][1]))):
        asvspoof2019_la(tmp_path, "test")
    for path in (tmp_path / ASVSPOOF2019_LA_LAYOUT["train"][0]).iterdir():
        path.unlink()
    (tmp_path / ASVSPOOF2019_LA_LAYOUT["train"][0]).rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "ASVspoof2019_LA_train" / "flac"))):
        asvspoof2019_la(tmp_path, "train")


# In-the-Wild


META = """\
file,speaker,label
0.wav,Alec Guinness,spoof
1.wav,Alec Guinness,bona-fide
sub/2.wav,Barack Obama,bonafide
"""


def _fake_wild(root: Path, text: str = META) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("0.wav", "1.wav", "sub/2.wav"):
        _write_audio(root / name)
    (root / "meta.csv").write_text(text)
    return root / "meta.csv"


def test_in_the_wild_parsing(tmp_path):
    _fake_wild(tmp_path)
    assert read_in_the_wild(str(tmp_path)) == [
        Utterance(tmp_path / "0.wav", 0, "Alec Guinness", "spoof"),
        Utterance(tmp_path / "1.wav", 1, "Alec Guinness", "-"),
        Utterance(tmp_path / "sub" / "2.wav", 1, "Barack Obama", "-"),
    ]


def test_in_the_wild_quoted_fields_and_bom(tmp_path):
    _fake_wild(tmp_path, '\ufefffile,speaker,label\n0.wav,"Guinness, Alec",Spoof\n')
    (utt,) = read_in_the_wild(tmp_path)
    assert utt.speaker == "Guinness, Alec" and utt.label == 0


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("file,label\n0.wav,spoof\n", r"missing column\(s\) speaker at {p}:1"),
        (META + "1.wav,Someone,fake\n", r"unknown label 'fake' at {p}:5"),
        (META + "0.wav,Someone\n", r"empty or missing label at {p}:5"),
        (META + "0.wav,Someone,spoof\n", r"duplicate file .*0\.wav' at {p}:5 .*line 2"),
        (META + "gone.wav,Someone,spoof\n", r"1 audio file\(s\) listed in {p} do not exist: {p}:5: .*gone\.wav"),
    ],
)
def test_in_the_wild_errors_name_meta_and_line(tmp_path, text, pattern):
    meta = _fake_wild(tmp_path, text)
    with pytest.raises(ProtocolError, match=pattern.format(p=re.escape(str(meta)))):
        read_in_the_wild(tmp_path)


def test_in_the_wild_missing_meta(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "meta.csv"))):
        read_in_the_wild(tmp_path)


# speaker-disjoint splits


def _corpus(sizes: list[int]) -> list[Utterance]:
    return [Utterance(Path(f"s{s}_{i}.wav"), i % 2, f"s{s}", "-") for s, n in enumerate(sizes) for i in range(n)]


def test_split_by_speaker_is_disjoint_complete_and_deterministic():
    rng = np.random.default_rng(1)
    utts = _corpus(list(rng.integers(5, 40, size=40)))
    splits = split_by_speaker(utts, seed=3)
    assert set(splits) == {"train", "val", "test"}
    speakers = {name: {u.speaker for u in part} for name, part in splits.items()}
    assert not speakers["train"] & speakers["val"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["val"] & speakers["test"]
    assert sorted(map(str, (u.path for part in splits.values() for u in part))) == sorted(str(u.path) for u in utts)
    for name, frac in zip(("train", "val", "test"), (0.7, 0.1, 0.2), strict=True):
        assert abs(len(splits[name]) / len(utts) - frac) < 0.05
    assert split_by_speaker(utts, seed=3) == splits
    assert split_by_speaker(utts, seed=4) != splits


def test_split_by_speaker_keeps_input_order():
    utts = _corpus([3, 3, 3])
    for part in split_by_speaker(utts, (0.4, 0.3, 0.3)).values():
        assert part == sorted(part, key=utts.index)


def test_split_by_speaker_zero_fraction_and_minimum_speakers():
    utts = _corpus([4, 4])
    splits = split_by_speaker(utts, (0.5, 0.0, 0.5))
    assert splits["val"] == [] and len(splits["train"]) == len(splits["test"]) == 4
    with pytest.raises(ValueError, match="2 speaker\\(s\\) cannot fill 3"):
        split_by_speaker(utts)
    three = split_by_speaker(_corpus([10, 1, 1]), (0.8, 0.1, 0.1))
    assert all(three[name] for name in ("train", "val", "test"))


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.5, 0.5)])
def test_split_by_speaker_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_by_speaker(_corpus([2, 2, 2]), fractions)
