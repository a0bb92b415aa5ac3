"""The ABR waterfall: one ear's recordings stacked by stimulus level, the way audiologists read an ABR.

A clinician judges an ABR series as a whole: the traces of one ear, highest level at the top, are stacked with a
constant vertical offset; wave V is followed down the stack as its latency grows and its amplitude shrinks, and the
threshold is the lowest level at which a response is still seen. Replicates at the same level are overlaid, since
agreement between them is what separates a response from noise. `waterfall` draws exactly that from `ABRRecords`,
optionally with a model's predictions (peaks, threshold, denoised signal) on top, so predictions are judged the way
the data are.

The figure is a plain `matplotlib.figure.Figure` (no pyplot, no global state, no backend needed), suitable for
`SummaryWriter.add_figure` or `Figure.savefig`. Its artists carry a ``gid`` so tests and tools can find them:

===================  ===========================================================================================
gid                  artist
===================  ===========================================================================================
``signal``           one line per recording (the averaged, noisy trace)
``clean``            one line per recording, when the records hold the noise-free waveform
``pred_signal``      one line per recording, the predicted / denoised signal
``peaks``            one marker line holding every present wave of the series (filled markers)
``pred_peaks``       the same for predicted waves (hollow markers)
``peak_label``       the Roman numeral of a wave, once per level and wave
``threshold``        the ear's threshold (dashed line); its text has gid ``threshold_label``
``pred_threshold``   the predicted threshold (dash-dot line); its text has gid ``pred_threshold_label``
``scale_bar``        the vertical amplitude scale bar; its text has gid ``scale_label``
===================  ===========================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from abr_lab.optimized_unet.schema import CLASS_NAMES, STATIC_NAMES, WAVES, ABRRecords

INTENSITY = STATIC_NAMES.index("intensity")
AGE = STATIC_NAMES.index("age")
RATE = STATIC_NAMES.index("rate")
# Trace spacing = SPACING_FACTOR × the 99th percentile of |signal| over the series (robust to a single artefact):
# wide enough that a wave V rarely reaches the trace above, narrow enough that a 10-level series stays readable.
SPACING_FACTOR = 1.5
# Candidate lengths of the amplitude scale bar, µV: the largest one not longer than the trace spacing is drawn.
SCALE_BAR_UV: tuple[float, ...] = (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
PREDICTION_KEYS: tuple[str, ...] = ("peaks", "peak_mask", "threshold_db", "signal")


SIGNAL_COLOURS = ("k", "0.4")  # first replicate at a level, further replicates
CLEAN_COLOUR = "tab:orange"
PRED_COLOUR = "tab:red"
PRED_SIGNAL_COLOUR = "tab:blue"
THRESHOLD_COLOUR = "tab:green"


def series_index(records: ABRRecords, patient_id: str, ear: str) -> np.ndarray:
    """Indices of the recordings of one ear, sorted by intensity, highest first (ties keep the file order).

    Raises `ValueError` naming the patient and ear when there is no such recording.
    """
    index = np.flatnonzero((records.patient_id == patient_id) & (records.ear == ear))
    if index.size == 0:
        raise ValueError(f"no recording of patient {patient_id!r}, ear {ear!r}")
    order = np.argsort(-records.static[index, INTENSITY], kind="stable")
    return index[order]


def pick_series(records: ABRRecords, patient_id: str | None = None, ear: str | None = None) -> tuple[str, str]:
    """A default (patient_id, ear) to show: the ear with the most distinct levels (ties: the first in the file).

    `patient_id` and `ear`, when given, restrict the choice (e.g. a patient's best ear). Raises `ValueError` if no
    recording matches. Deterministic, so the same file always shows the same series.
    """
    keep = np.ones(len(records), dtype=bool)
    if patient_id is not None:
        keep &= records.patient_id == patient_id
    if ear is not None:
        keep &= records.ear == ear
    if not keep.any():
        wanted = ", ".join(f"{k} {v!r}" for k, v in (("patient", patient_id), ("ear", ear)) if v is not None)
        raise ValueError(f"no recording matches {wanted or 'anything (the records are empty)'}")
    levels: dict[tuple[str, str], set[float]] = {}  # insertion order = first occurrence
    for i in np.flatnonzero(keep):
        key = (str(records.patient_id[i]), str(records.ear[i]))
        levels.setdefault(key, set()).add(float(records.static[i, INTENSITY]))
    return max(levels, key=lambda k: len(levels[k]))  # max() returns the first of equal maxima


def default_title(records: ABRRecords, patient_id: str, ear: str) -> str:
    """ "patient P, ear E, class C, age A y, rate R/s" for the series (class, age and rate of its first row)."""
    first = series_index(records, patient_id, ear)[0]
    label = int(records.label[first])
    name = CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)
    age, rate = float(records.static[first, AGE]), float(records.static[first, RATE])
    age_text = f"{12 * age:.1f} months" if age < 2 else f"{age:.0f} y"
    return f"patient {patient_id}, ear {ear or '?'}, class {name}, age {age_text}, rate {rate:g}/s"


def waterfall(
    records: ABRRecords,
    patient_id: str,
    ear: str,
    predictions: Mapping[str, Any] | None = None,
    title: str | None = None,
    *,
    spacing: float | None = None,
) -> Figure:
    """The waterfall figure of one ear's level series (see the module docstring for what is drawn and why).

    Args:
        records: the dataset, raw units (µV, ms, dB nHL).
        patient_id, ear: which series (`series_index`).
        predictions: optional overlay, each entry aligned with `series_index` order: ``peaks`` (n, 3, 2) latency ms
            and amplitude µV, ``peak_mask`` (n, 3) (all waves if absent), ``threshold_db`` a scalar, ``signal``
            (n, T) µV. NumPy arrays, tensors or nested lists.
        title: the axes title; default `default_title`.
        spacing: vertical offset between levels, µV; default `SPACING_FACTOR` × the 99th percentile of |signal|.

    Returns the figure (never shown, never registered with pyplot).
    """
    index = series_index(records, patient_id, ear)
    series = records.subset(index)
    preds = _check_predictions(predictions, len(index), series.num_samples)
    t = series.time_ms()
    level = series.static[:, INTENSITY].astype(float)
    levels = np.unique(level)[::-1]  # distinct, highest first
    if spacing is None:
        spacing = SPACING_FACTOR * float(np.percentile(np.abs(series.signal), 99))
        if not (np.isfinite(spacing) and spacing > 0):
            spacing = 1.0  # a flat series: any spacing separates the traces
    elif not (np.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spacing={spacing}: need a positive number of µV")
    level_offset = {lev: (len(levels) - 1 - k) * spacing for k, lev in enumerate(levels)}  # highest level on top
    offset = np.array([level_offset[lev] for lev in level])

    fig = Figure(figsize=(7.0, float(np.clip(1.6 + 0.75 * len(levels), 4.0, 12.0))), layout="constrained")
    ax = fig.add_subplot()
    seen: dict[float, int] = {}  # replicates drawn so far per level
    for i in range(len(series)):
        replicate = seen.get(level[i], 0)
        seen[level[i]] = replicate + 1
        if series.clean is not None:
            ax.plot(t, series.clean[i] + offset[i], color=CLEAN_COLOUR, lw=0.7, zorder=1, gid="clean", label="clean")
        colour = SIGNAL_COLOURS[min(replicate, len(SIGNAL_COLOURS) - 1)]
        ax.plot(t, series.signal[i] + offset[i], color=colour, lw=1.0, zorder=2, gid="signal", label="recording")
        if "signal" in preds:
            ax.plot(
                t,
                preds["signal"][i] + offset[i],
                color=PRED_SIGNAL_COLOUR,
                lw=0.9,
                zorder=3,
                gid="pred_signal",
                label="predicted signal",
            )
    _draw_peaks(ax, series.peaks, series.peak_mask, offset, level, hollow=False)
    if "peaks" in preds:
        _draw_peaks(ax, preds["peaks"], preds["peak_mask"], offset, level, hollow=True)

    span = float(t[-1] - t[0]) or 1.0
    drawn = series.signal + offset[:, None]  # the y limits hold every trace whole: a clipped wave V misleads
    ys = [float(drawn.min()), float(drawn.max()), offset.min() - 0.6 * spacing, offset.max() + 0.6 * spacing]
    threshold = float(np.median(series.threshold_db))  # one value per ear; the median shrugs off a stray row
    ys.append(_draw_threshold(ax, t, threshold, levels, level_offset, spacing, "threshold", THRESHOLD_COLOUR))
    if "threshold_db" in preds:
        ys.append(
            _draw_threshold(
                ax,
                t,
                preds["threshold_db"],
                levels,
                level_offset,
                spacing,
                "pred_threshold",
                PRED_COLOUR,
                prefix="predicted ",
            )
        )
    _draw_scale_bar(ax, t[-1] + 0.05 * span, offset.min(), spacing)

    ax.set_xlim(t[0], t[-1] + 0.16 * span)  # the right margin holds the scale bar
    ax.set_ylim(min(ys) - 0.2 * spacing, max(ys) + 0.2 * spacing)
    ax.set_yticks([level_offset[lev] for lev in levels], [f"{lev:g}" for lev in levels])
    ax.set_ylabel("stimulus level (dB nHL)")
    ax.set_xlabel("time after click (ms)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title if title is not None else default_title(records, patient_id, ear), fontsize=10)
    handles = _legend_handles(ax)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    return fig


def generated_waterfall(
    records: ABRRecords, generated: Mapping[str, np.ndarray], patient_id: str, ear: str, title: str | None = None
) -> Figure:
    """The waterfall of signals generated for the rows of `records` (``generate_joint``'s outputs as NumPy arrays,
    aligned with those rows): the generated waveforms in place of the recordings, no data labels, and the heads'
    reading on top (peaks where present, the series' mean predicted threshold)."""
    index = series_index(records, patient_id, ear)
    shown = replace(
        records,
        signal=np.asarray(generated["signal"], dtype=np.float32),
        clean=None,
        peak_mask=np.zeros_like(records.peak_mask),  # what is drawn is the heads' reading, not labels
    )
    predictions = {
        "peaks": generated["peaks_pred"][index],
        "peak_mask": generated["presence_pred"][index],
        "threshold_db": float(np.mean(generated["threshold_pred"][index])),
    }
    return waterfall(shown, patient_id, ear, predictions=predictions, title=title)


def _check_predictions(predictions: Mapping[str, Any] | None, n: int, num_samples: int) -> dict[str, Any]:
    """Validated NumPy copies of the prediction overlay; a shape mismatch names the key (a silent misalignment
    would draw another recording's peaks)."""
    if not predictions:
        return {}
    unknown = sorted(set(predictions) - set(PREDICTION_KEYS))
    if unknown:
        raise ValueError(f"predictions: unknown key(s) {unknown}, expected some of {list(PREDICTION_KEYS)}")
    out: dict[str, Any] = {}
    shapes = {"peaks": (n, len(WAVES), 2), "peak_mask": (n, len(WAVES)), "signal": (n, num_samples)}
    for key, shape in shapes.items():
        if predictions.get(key) is not None:
            out[key] = _to_numpy(predictions[key])
            if out[key].shape != shape:
                raise ValueError(f"predictions[{key!r}] has shape {out[key].shape}, expected {shape}")
    if "peaks" in out:
        out["peaks"] = out["peaks"].astype(float)
        out["peak_mask"] = out.get("peak_mask", np.ones(shape=(n, len(WAVES)))).astype(bool)
    else:
        out.pop("peak_mask", None)  # a mask without peaks has nothing to mark
    if "signal" in out:
        out["signal"] = out["signal"].astype(float)
    if predictions.get("threshold_db") is not None:
        value = _to_numpy(predictions["threshold_db"])
        if value.size != 1:
            raise ValueError(f"predictions['threshold_db'] has shape {value.shape}, expected a scalar")
        out["threshold_db"] = float(value.reshape(()))
    return out


def _to_numpy(value: Any) -> np.ndarray:
    """An array from NumPy, nested lists or a torch tensor (on any device, with or without grad)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _draw_peaks(
    ax: Axes, peaks: np.ndarray, mask: np.ndarray, offset: np.ndarray, level: np.ndarray, hollow: bool
) -> None:
    """Markers at (latency, amplitude + offset) of every present wave; each numeral once per level and wave."""
    rows, waves = np.nonzero(mask)
    if rows.size == 0:
        return
    x, y = peaks[rows, waves, 0], peaks[rows, waves, 1] + offset[rows]
    colour = PRED_COLOUR if hollow else "k"
    ax.plot(
        x,
        y,
        ls="none",
        marker="v",
        ms=5,
        zorder=4,
        mec=colour,
        mfc="none" if hollow else colour,
        gid="pred_peaks" if hollow else "peaks",
        label="predicted peaks" if hollow else "peaks",
    )
    labelled: set[tuple[float, int]] = set()
    for r, w, xi, yi in zip(rows, waves, x, y, strict=True):
        if (level[r], w) in labelled:
            continue  # replicates are overlaid: one numeral per level is enough
        labelled.add((level[r], w))
        ax.annotate(
            WAVES[w],
            (xi, yi),
            xytext=(0, -8 if hollow else 5),
            textcoords="offset points",
            ha="center",
            va="top" if hollow else "bottom",
            fontsize=8,
            color=colour,
            gid="pred_peak_label" if hollow else "peak_label",
        )


def _threshold_offset(threshold: float, levels: np.ndarray, level_offset: dict[float, float], spacing: float) -> float:
    """Where a level lies on the y axis: interpolated between the neighbouring traces, or half a spacing beyond the
    top (bottom) trace when above (below) every tested level."""
    if threshold > levels[0]:
        return level_offset[levels[0]] + 0.5 * spacing
    if threshold < levels[-1]:
        return level_offset[levels[-1]] - 0.5 * spacing
    ascending = levels[::-1]
    return float(np.interp(threshold, ascending, [level_offset[lev] for lev in ascending]))


def _draw_threshold(
    ax: Axes,
    t: np.ndarray,
    threshold: float,
    levels: np.ndarray,
    level_offset: dict[float, float],
    spacing: float,
    gid: str,
    colour: str,
    prefix: str = "",
) -> float:
    """A horizontal line across the traces at the threshold's level position, labelled at its right end; returns
    its y."""
    y = _threshold_offset(threshold, levels, level_offset, spacing)
    style = "-." if prefix else "--"
    label = f"{prefix}threshold"
    ax.plot([t[0], t[-1]], [y, y], ls=style, lw=1.2, color=colour, zorder=5, gid=gid, label=label)
    ax.text(
        t[-1],
        y,
        f"{label} {threshold:.0f} dB nHL",
        ha="right",
        va="top" if prefix else "bottom",
        fontsize=8,
        color=colour,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        gid=f"{gid}_label",
    )
    return y


def _draw_scale_bar(ax: Axes, x: float, y0: float, spacing: float) -> None:
    """A vertical bar of a round amplitude (the offsets make the y axis meaningless as µV)."""
    fitting = [v for v in SCALE_BAR_UV if v <= spacing]
    length = fitting[-1] if fitting else SCALE_BAR_UV[0]
    ax.plot([x, x], [y0, y0 + length], color="k", lw=2.0, solid_capstyle="butt", gid="scale_bar")
    ax.annotate(
        f"{length:g} µV",
        (x, y0 + 0.5 * length),
        xytext=(4, 0),
        textcoords="offset points",
        ha="left",
        va="center",
        fontsize=8,
        gid="scale_label",
    )


def _legend_handles(ax: Axes) -> list[Line2D]:
    """One handle per kind of artist (the first line of each label)."""
    handles: dict[str, Line2D] = {}
    for line in ax.get_lines():
        label = line.get_label()
        if not label.startswith("_") and label not in handles:
            handles[label] = line
    return list(handles.values())


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...] = CLASS_NAMES, title: str = "") -> Figure:
    """The confusion matrix (rows true, columns predicted) as counts, coloured by each row's share (recall), so
    the rare classes are as readable as the common one."""
    counts = np.asarray(confusion, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = counts / np.maximum(rows, 1)
    n = len(class_names)
    fig = Figure(figsize=(1.2 * n + 2, 1.1 * n + 1.5))
    ax = fig.subplots()
    ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(n):
        for j in range(n):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{counts[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n), [c.lower() for c in class_names], rotation=30, ha="right")
    ax.set_yticks(range(n), [c.lower() for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig
