"""Readers for real anti-spoofing corpora: ASVspoof 2019 LA (Wang et al. 2020) and In-the-Wild (Müller et al. 2022).

Each reader turns a corpus's metadata into a list of `Utterance`s and checks it against the audio on disk up front, so
a wrong path or a half-extracted archive fails at start-up with the file and line to look at, not hours into training.
Labels follow ASVspoof: 1 = bona fide, 0 = spoof.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BONAFIDE = 1
SPOOF = 0
SPLITS = ("train", "val", "test")
_MAX_LISTED = 5  # missing files named in one error; the rest are counted

# split -> (audio folder, CM protocol file), relative to the root of the extracted LA archive (LA.zip).
ASVSPOOF2019_LA_LAYOUT: dict[str, tuple[str, str]] = {
    "train": ("ASVspoof2019_LA_train/flac", "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt"),
    "val": ("ASVspoof2019_LA_dev/flac", "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt"),
    "test": ("ASVspoof2019_LA_eval/flac", "ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"),
}

_ASVSPOOF_KEYS = {"bonafide": BONAFIDE, "spoof": SPOOF}
_IN_THE_WILD_LABELS = {"bona-fide": BONAFIDE, "bonafide": BONAFIDE, "spoof": SPOOF}
_IN_THE_WILD_COLUMNS = ("file", "speaker", "label")


@dataclass(frozen=True)
class Utterance:
    """One labelled recording.

    Attributes:
        path: audio file.
        label: 1 = bona fide, 0 = spoof.
        speaker: speaker id (ASVspoof) or name (In-the-Wild); used for speaker-disjoint splits.
        attack: ASVspoof system id ("A01".."A19"), "-" for bona fide, "spoof" where a corpus does not name attacks.
    """

    path: Path
    label: int
    speaker: str
    attack: str


class ProtocolError(ValueError):
    """A protocol or metadata file is malformed or names audio that is not there; the message gives path:line."""


def _check_files_exist(utterances: Sequence[Utterance], lines: Sequence[int], source: Path) -> None:
    """Raise one `ProtocolError` naming the first few missing audio files (with their lines) and how many there are."""
    missing = [(line, u.path) for line, u in zip(lines, utterances, strict=True) if not u.path.is_file()]
    if missing:
        listed = "; ".join(f"{source}:{line}: {path}" for line, path in missing[:_MAX_LISTED])
        more = f" (and {len(missing) - _MAX_LISTED} more)" if len(missing) > _MAX_LISTED else ""
        raise ProtocolError(f"{len(missing)} audio file(s) listed in {source} do not exist: {listed}{more}")


def _check_unique(name: str, line: int, seen: dict[str, int], source: Path) -> None:
    """Raise a `ProtocolError` when `name` was already listed on an earlier line; otherwise remember it."""
    if name in seen:
        raise ProtocolError(f"duplicate file '{name}' at {source}:{line} (first listed at line {seen[name]})")
    seen[name] = line


# ASVspoof 2019 LA


def read_asvspoof_protocol(protocol: str | Path, audio_dir: str | Path, suffix: str = ".flac") -> list[Utterance]:
    """Read an ASVspoof 2019 LA countermeasure protocol: lines ``SPEAKER FILE - SYSTEM KEY``.

    For example ``LA_0079 LA_T_1138215 - - bonafide`` and ``LA_0079 LA_T_1004644 - A01 spoof``. Blank lines are
    skipped. Every line is checked before anything is returned.

    Args:
        protocol: the protocol text file.
        audio_dir: folder holding ``FILE + suffix`` for each line.
        suffix: audio file extension.

    Raises:
        FileNotFoundError: the protocol file or the audio folder does not exist.
        ProtocolError: a line does not have 5 fields, a KEY is not bonafide|spoof, a FILE is listed twice, or audio
            files are missing (the first few are named with their line, and all are counted).
    """
    protocol, audio_dir = Path(protocol), Path(audio_dir)
    if not protocol.is_file():
        raise FileNotFoundError(f"ASVspoof protocol file not found: {protocol}")
    if not audio_dir.is_dir():
        raise FileNotFoundError(f"ASVspoof audio folder not found: {audio_dir}")
    utterances, lines, seen = [], [], {}
    with open(protocol, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) != 5:
                raise ProtocolError(
                    f"expected 5 fields 'SPEAKER FILE - SYSTEM KEY' at {protocol}:{line_no}, "
                    f"got {len(fields)}: {text.strip()!r}"
                )
            speaker, name, _, system, key = fields
            if key not in _ASVSPOOF_KEYS:
                raise ProtocolError(f"unknown key '{key}' at {protocol}:{line_no}, expected bonafide|spoof")
            _check_unique(name, line_no, seen, protocol)
            utterances.append(Utterance(audio_dir / (name + suffix), _ASVSPOOF_KEYS[key], speaker, system))
            lines.append(line_no)
    _check_files_exist(utterances, lines, protocol)
    return utterances


def asvspoof2019_la(root: str | Path, split: str) -> list[Utterance]:
    """The utterances of one split of ASVspoof 2019 LA, laid out as in `ASVSPOOF2019_LA_LAYOUT` under `root`.

    `root` is the folder that holds ``ASVspoof2019_LA_train``, ``ASVspoof2019_LA_cm_protocols`` etc. (the extracted
    ``LA`` folder). Splits: train, val (the official dev set) and test (the official eval set).

    Raises:
        ValueError: `split` is not train|val|test.
        FileNotFoundError: `root`, the split's audio folder or its protocol file is missing (names the expected path).
        ProtocolError: see `read_asvspoof_protocol`.
    """
    if split not in ASVSPOOF2019_LA_LAYOUT:
        raise ValueError(
            f"unknown ASVspoof 2019 LA split '{split}', expected one of {'|'.join(ASVSPOOF2019_LA_LAYOUT)}"
        )
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ASVspoof 2019 LA root folder not found: {root}")
    audio_dir, protocol = (root / rel for rel in ASVSPOOF2019_LA_LAYOUT[split])
    return read_asvspoof_protocol(protocol, audio_dir)


# In-the-Wild


def _in_the_wild_row(row: dict[str, str | None], root: Path, meta: Path, line_no: int) -> Utterance:
    """One `meta.csv` row as an `Utterance` (path relative to the csv's folder)."""
    values = {col: (row.get(col) or "").strip() for col in _IN_THE_WILD_COLUMNS}
    empty = [col for col, value in values.items() if not value]
    if empty:
        raise ProtocolError(f"empty or missing {', '.join(empty)} at {meta}:{line_no}")
    label = values["label"].lower()
    if label not in _IN_THE_WILD_LABELS:
        raise ProtocolError(f"unknown label '{values['label']}' at {meta}:{line_no}, expected bona-fide|bonafide|spoof")
    target = _IN_THE_WILD_LABELS[label]
    return Utterance(root / values["file"], target, values["speaker"], "-" if target == BONAFIDE else "spoof")


def read_in_the_wild(root: str | Path) -> list[Utterance]:
    """Read the In-the-Wild corpus: ``root/meta.csv`` (header ``file,speaker,label``) and the audio beside it.

    Labels are ``bona-fide`` (``bonafide`` is accepted too) or ``spoof``, in any case. The corpus does not name the
    spoofing system, so `attack` is "spoof" for spoofed and "-" for bona fide utterances.

    Raises:
        FileNotFoundError: ``root/meta.csv`` does not exist.
        ProtocolError: the header lacks a column, a row has an empty field or an unknown label, a file is listed twice,
            or audio files are missing; each names meta.csv and the line.
    """
    root = Path(root)
    meta = root / "meta.csv"
    if not meta.is_file():
        raise FileNotFoundError(f"In-the-Wild metadata not found: {meta}")
    utterances, lines, seen = [], [], {}
    with open(meta, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = [col.strip() for col in reader.fieldnames or []]
        absent = [col for col in _IN_THE_WILD_COLUMNS if col not in header]
        if absent:
            raise ProtocolError(f"missing column(s) {', '.join(absent)} at {meta}:1, header is {header}")
        reader.fieldnames = header
        for row in reader:
            line_no = reader.line_num
            utterance = _in_the_wild_row(row, root, meta, line_no)
            _check_unique(os.path.normpath(utterance.path), line_no, seen, meta)
            utterances.append(utterance)
            lines.append(line_no)
    _check_files_exist(utterances, lines, meta)
    return utterances


# speaker-disjoint splits


def split_by_speaker(
    utterances: Sequence[Utterance],
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> dict[str, list[Utterance]]:
    """Split into train/val/test with no speaker in two splits, each close to its fraction of the utterances.

    Speakers are shuffled by `seed`; each split with a non-zero fraction first gets one speaker, then every remaining
    speaker goes to the split furthest below its target count. A split can therefore overshoot its target by at most
    one speaker's utterances. Within a split, utterances keep their input order.

    Args:
        utterances: the corpus (e.g. from `read_in_the_wild`).
        fractions: shares of utterances for train, val and test; non-negative, summing to 1.
        seed: shuffling seed; the same seed gives the same split.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (a split with fraction 0 is empty).

    Raises:
        ValueError: bad fractions, or fewer speakers than splits with a non-zero fraction.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers (train, val, test) summing to 1, got {fractions}")
    counts: dict[str, int] = {}
    for u in utterances:
        counts[u.speaker] = counts.get(u.speaker, 0) + 1
    active = [i for i, frac in enumerate(fractions) if frac > 0]
    if len(counts) < len(active):
        raise ValueError(f"{len(counts)} speaker(s) cannot fill {len(active)} speaker-disjoint non-empty splits")
    rng = np.random.default_rng(seed)
    ordered = sorted(counts)
    speakers = [ordered[i] for i in rng.permutation(len(ordered))]
    targets = np.asarray(fractions) * len(utterances)
    assigned = np.zeros(3)
    split_of: dict[str, int] = {}
    for n, speaker in enumerate(speakers):
        split = active[n] if n < len(active) else int(np.argmax(targets - assigned))
        split_of[speaker] = split
        assigned[split] += counts[speaker]
    out: dict[str, list[Utterance]] = {name: [] for name in SPLITS}
    for u in utterances:
        out[SPLITS[split_of[u.speaker]]].append(u)
    return out
