"""Proof of joint generation: does a U-Net trained with `experiment=unet_joint` generate ABRs that behave like data?

    python scripts/generation_report.py ckpt_path=<checkpoint> [split=test] [n=<count>] [steps=50]
                                        [guidance_scale=<w>] [seed=0] [batch_size=512] [out=<report.json>]

Every figure is measured on signals generated for one split's own recordings (`split=test`, the default, for the
README's figures; `split=val` to choose sampling settings such as `guidance_scale` without looking at the test
split): for each (`n` drawn at random, all by default) the model generates a signal conditioned on that recording's
static parameters (age, intensity, rate, Fmp) and, if it is class-conditioned, its class. Then:

1. **Latency–intensity slope of wave V** over normal-hearing recordings (ms per dB): the data's, from the labelled
   peaks of the split's recordings with wave V; the generated signals', measured twice — by a plain peak picker that
   reads only the waveform (the largest positive deflection within the window where the train data's wave V lies,
   also applied to the real clean waveforms for reference), and by the U-Net's peak head. Bar: within 20 % of the
   data's.
2. **Wave-V presence rate by class**: the data's (labels) against the generated signals' (the peak head's
   presence); the head's rate on the real recordings is printed beside them as the instrument's own error. Bar:
   within 10 points for every class with at least 20 recordings in the split.
3. **Fréchet distance** between real and generated signals in the U-Net encoder's feature space (the bottleneck,
   mean over time, of the analysis path): real half A against the generated signals of half B, next to real half A
   against real half B (the floor: what sampling alone gives) and against a baseline generator (each recording's
   class-and-intensity mean waveform of the train split plus nothing: what the prior alone gives).
4. **A classifier trained on real data** (the U-Net's class head) reads the generated class-conditioned signals:
   accuracy and macro-F1 against the conditioning class, beside its scores on the split's real recordings.

Writes `generation_report.json` (and `generated_waterfall.png`, a generated patient's level series) next to the
checkpoint's run and prints a table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from abr_lab.atomic import atomic_write_text  # noqa: E402
from abr_lab.checkpoint import checkpoint_config, instantiate_datamodule, load_module, run_dir_of  # noqa: E402
from abr_lab.optimized_unet.figures import generated_waterfall, pick_series  # noqa: E402
from abr_lab.optimized_unet.schema import CLASS_NAMES, STATIC_NAMES, ABRRecords  # noqa: E402

INTENSITY = STATIC_NAMES.index("intensity")
V = 2  # wave V's index in (I, III, V)
NORMAL = CLASS_NAMES.index("NORMAL")
MIN_CLASS_COUNT = 20  # presence rates of rarer classes in a split are too noisy for a 10-point bar
SPLITS = ("val", "test")
OPTIONS = ("ckpt_path", "split", "n", "steps", "guidance_scale", "seed", "batch_size", "out")


# ------------------------------------------------------------------------------------------------ measurements


def slope(intensity: np.ndarray, latency: np.ndarray) -> float:
    """Least-squares slope of latency (ms) on intensity (dB): ms per dB; NaN with fewer than 3 points or levels."""
    if len(intensity) < 3 or len(np.unique(intensity)) < 2:
        return float("nan")
    return float(np.polyfit(intensity.astype(np.float64), latency.astype(np.float64), 1)[0])


def pick_wave_v(signal: np.ndarray, time_ms: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Latency (ms) of the largest positive deflection of each waveform (N, T) inside `window` (ms)."""
    inside = (time_ms >= window[0]) & (time_ms <= window[1])
    kernel = np.ones(5) / 5  # 0.25 ms at 20 kHz: a wave V lasts ~1 ms, noise wiggles less
    smooth = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="same"), 1, signal)
    return time_ms[inside][smooth[:, inside].argmax(axis=1)]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * covmean))


def macro_f1(pred: np.ndarray, label: np.ndarray, classes: list[int]) -> float:
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (label == c))
        denom = np.sum(pred == c) + np.sum(label == c)
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


@torch.no_grad()
def encoder_features(module: Any, signal_uv: np.ndarray, static_raw: np.ndarray, batch_size: int) -> np.ndarray:
    """The analysis path's bottleneck, mean over time, for waveforms in µV: (N, C_bottleneck)."""
    out = []
    for start in range(0, len(signal_uv), batch_size):
        x = torch.as_tensor(signal_uv[start : start + batch_size] / float(module.signal_std), dtype=torch.float32)
        static = module.prior.normalise(torch.as_tensor(static_raw[start : start + batch_size], dtype=torch.float32))
        _, _, z = module.net.trunk(x.unsqueeze(1), module.net.static_embedding(static))
        out.append(z.mean(-1).numpy())
    return np.concatenate(out).astype(np.float64)


@torch.no_grad()
def analyse(module: Any, signal_uv: np.ndarray, static_raw: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """The heads' predictions (`OptimizedUNetModule.predict`) for waveforms in µV."""
    parts = []
    for start in range(0, len(signal_uv), batch_size):
        x = torch.as_tensor(signal_uv[start : start + batch_size] / float(module.signal_std), dtype=torch.float32)
        static = module.prior.normalise(torch.as_tensor(static_raw[start : start + batch_size], dtype=torch.float32))
        parts.append({k: v.numpy() for k, v in module.predict(module.net(x.unsqueeze(1), static)).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def generate(module: Any, records: ABRRecords, args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Signals conditioned on each recording's parameters (and class), in batches."""
    generator = torch.Generator().manual_seed(args["seed"])
    parts = []
    for start in range(0, len(records), args["batch_size"]):
        stop = min(start + args["batch_size"], len(records))
        out = module.generate_joint(
            stop - start,
            steps=args["steps"],
            guidance_scale=args["guidance_scale"],
            static=torch.as_tensor(records.static[start:stop], dtype=torch.float32),
            labels=torch.as_tensor(records.label[start:stop]),
            generator=generator,
        )
        parts.append({k: v.numpy() for k, v in out.items()})
        print(f"  generated {stop}/{len(records)}", flush=True)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def class_mean_baseline(train: ABRRecords, records: ABRRecords) -> np.ndarray:
    """Each recording's train-split mean clean waveform of its (class, intensity) (the class's mean if that
    level is absent): a generator that knows the parameters and nothing of the variety between ears."""
    source = train.clean if train.clean is not None else train.signal
    out = np.empty_like(records.signal)
    for i, (label, level) in enumerate(zip(records.label, records.static[:, INTENSITY], strict=True)):
        rows = (train.label == label) & (train.static[:, INTENSITY] == level)
        if not rows.any():
            rows = train.label == label
        out[i] = source[rows].mean(0)
    return out


# ------------------------------------------------------------------------------------------------ report


def report(args: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    cfg = checkpoint_config(args["ckpt_path"])
    module = load_module(args["ckpt_path"], cfg)
    if getattr(module, "diffusion", None) is None:
        raise SystemExit(f"{args['ckpt_path']}: trained without generation (train with experiment=unet_joint)")
    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    records, train = datamodule.split_records(args["split"]), datamodule.split_records("train")
    if args["n"] is not None and args["n"] < len(records):
        records = records.subset(
            np.sort(np.random.default_rng(args["seed"]).choice(len(records), args["n"], replace=False))
        )
    real_clean = records.clean if records.clean is not None else records.signal
    time_ms = records.time_ms()
    print(f"generating {len(records)} signals ({args['steps'] or module.diffusion.sample_steps} DDIM steps) ...")
    gen = generate(module, records, args)
    batch = args["batch_size"]
    on_real = analyse(module, records.signal, records.static, batch)

    # 1. latency-intensity slope of wave V, normal hearing
    normal_v = (records.label == NORMAL) & records.peak_mask[:, V]
    train_v = train.peak_mask[:, V]
    window = tuple(np.percentile(train.peaks[train_v, V, 0], [1, 99]).tolist())
    normal = records.label == NORMAL
    gen_v = normal & gen["presence_pred"][:, V]
    slopes = {
        "data (labels)": slope(records.static[normal_v, INTENSITY], records.peaks[normal_v, V, 0]),
        "real clean, peak picker": slope(
            records.static[normal_v, INTENSITY], pick_wave_v(real_clean[normal_v], time_ms, window)
        ),
        "generated, peak picker": slope(
            records.static[normal_v, INTENSITY], pick_wave_v(gen["signal"][normal_v], time_ms, window)
        ),
        "generated, peak head": slope(records.static[gen_v, INTENSITY], gen["peaks_pred"][gen_v, V, 0]),
    }
    data_slope = slopes["data (labels)"]
    slope_errors = {k: abs(v / data_slope - 1) for k, v in slopes.items() if k.startswith("generated")}

    # 2. wave V presence rate by class
    presence = {}
    for c, name in enumerate(CLASS_NAMES):
        rows = records.label == c
        if rows.sum() == 0:
            continue
        presence[name] = {
            "count": int(rows.sum()),
            "data": float(records.peak_mask[rows, V].mean()),
            "generated (head)": float(gen["presence_pred"][rows, V].mean()),
            "real recordings (head)": float(on_real["presence_pred"][rows, V].mean()),
        }
    presence_gaps = {
        name: abs(p["generated (head)"] - p["data"]) for name, p in presence.items() if p["count"] >= MIN_CLASS_COUNT
    }

    # 3. Fréchet distance in the encoder's feature space
    order = np.random.default_rng(args["seed"] + 1).permutation(len(records))
    half_a, half_b = order[: len(order) // 2], order[len(order) // 2 : 2 * (len(order) // 2)]
    feats_real = encoder_features(module, real_clean, records.static, batch)
    feats_gen = encoder_features(module, gen["signal"], records.static, batch)
    feats_base = encoder_features(module, class_mean_baseline(train, records), records.static, batch)
    fd = {
        "real A vs real B (floor)": frechet_distance(feats_real[half_a], feats_real[half_b]),
        "real A vs generated B": frechet_distance(feats_real[half_a], feats_gen[half_b]),
        "real A vs class-and-level mean B (baseline)": frechet_distance(feats_real[half_a], feats_base[half_b]),
    }

    # 4. the class head, trained on real recordings, reads generated ones
    classes = [c for c in range(len(CLASS_NAMES)) if (records.label == c).sum() > 0]
    classifier = {
        "generated": {
            "accuracy": float((gen["class_pred"] == records.label).mean()),
            "macro_f1": macro_f1(gen["class_pred"], records.label, classes),
        },
        "real recordings": {
            "accuracy": float((on_real["class_pred"] == records.label).mean()),
            "macro_f1": macro_f1(on_real["class_pred"], records.label, classes),
        },
    }

    result = {
        "checkpoint": str(args["ckpt_path"]),
        "split": args["split"],
        "recordings": len(records),
        "steps": args["steps"] or module.diffusion.sample_steps,
        "guidance_scale": module.diffusion.guidance_scale if args["guidance_scale"] is None else args["guidance_scale"],
        "wave_v_window_ms": window,
        "latency_slope_ms_per_db": slopes,
        "latency_slope_relative_error": slope_errors,
        "presence_v_by_class": presence,
        "presence_v_gap": presence_gaps,
        "frechet_distance": fd,
        "classifier": classifier,
        "bars": {
            "slope within 20 % (peak picker)": slope_errors["generated, peak picker"] <= 0.20,
            "slope within 20 % (peak head)": slope_errors["generated, peak head"] <= 0.20,
            f"presence within 10 points (classes with >= {MIN_CLASS_COUNT} recordings)": all(
                g <= 0.10 for g in presence_gaps.values()
            ),
        },
        "minutes": (time.time() - started) / 60,
    }
    suffix = "" if args["split"] == "test" else f"_{args['split']}"
    out = Path(args["out"]) if args["out"] else run_dir_of(args["ckpt_path"]) / f"generation_report{suffix}.json"
    atomic_write_text(out, json.dumps(result, indent=2))
    save_waterfall(records, gen, out.with_name(f"generated_waterfall{suffix}.png"))
    print_table(result)
    print(f"\nreport: {out}")
    return result


def save_waterfall(records: ABRRecords, gen: dict[str, np.ndarray], path: Path) -> None:
    """One ear's level series as the model generated it (heads' peaks on top), as a PNG."""
    patient_id, ear = pick_series(records)
    fig = generated_waterfall(records, gen, patient_id, ear, title=f"generated: patient {patient_id}")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def print_table(r: dict[str, Any]) -> None:
    print(f"\nJoint generation: {r['recordings']} {r['split']} recordings, ", end="")
    print(f"{r['steps']} DDIM steps, w = {r['guidance_scale']}")
    print("\nwave V latency-intensity slope, normal hearing (ms/dB):")
    for k, v in r["latency_slope_ms_per_db"].items():
        err = r["latency_slope_relative_error"].get(k)
        print(f"  {k:28s} {v:+.4f}" + (f"   ({100 * err:.0f} % from the data's)" if err is not None else ""))
    print("\nwave V presence rate by class (data | generated, head | real recordings, head):")
    for name, p in r["presence_v_by_class"].items():
        print(
            f"  {name:14s} n={p['count']:5d}  {p['data']:.3f} | {p['generated (head)']:.3f} | "
            f"{p['real recordings (head)']:.3f}"
        )
    print("\nFréchet distance, U-Net encoder features:")
    for k, v in r["frechet_distance"].items():
        print(f"  {k:46s} {v:.3f}")
    print("\nclass head (trained on real data):")
    for k, v in r["classifier"].items():
        print(f"  on {k:16s} accuracy {v['accuracy']:.3f}  macro-F1 {v['macro_f1']:.3f}")
    print("\nbars:", ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in r["bars"].items()))


def parse(argv: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {
        "split": "test",
        "n": None,
        "steps": None,
        "guidance_scale": None,
        "seed": 0,
        "batch_size": 512,
        "out": None,
    }
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise SystemExit(f"argument {arg!r}: expected one of {', '.join(f'{o}=...' for o in OPTIONS)}")
        args[key] = value
    if "ckpt_path" not in args:
        raise SystemExit("ckpt_path=<checkpoint> is required")
    if args["split"] not in SPLITS:
        raise SystemExit(f"split={args['split']!r}: expected one of {', '.join(SPLITS)}")
    for key in ("n", "steps", "seed", "batch_size"):
        args[key] = None if args[key] is None else int(args[key])
    args["guidance_scale"] = None if args["guidance_scale"] is None else float(args["guidance_scale"])
    return args


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    report(parse(sys.argv[1:]))
