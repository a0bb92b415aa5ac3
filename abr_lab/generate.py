"""New ABRs with their recording parameters from a U-Net trained with generation (`experiment=unet_joint`):
`python generate.py ckpt_path=<checkpoint> n=<count> out=<file.h5> [key=value ...]`.

The model is rebuilt from the checkpoint alone (`abr_lab.checkpoint`). `OptimizedUNetModule.generate_joint` draws
(class, static parameters) from the prior fitted on the train split, samples the signals with DDIM and reads them
with the heads; the result is written, atomically, as an ABR file in the data schema
(`abr_lab.optimized_unet.schema`), so it loads with ``data=abr_file data.path=<file>`` like any other:

- ``signal``: the generated waveform (noise-free, like the simulator's ``clean``), µV;
- ``static``: the drawn parameters; ``label``: the class the signal was conditioned on (the heads' class when the
  model is not class-conditioned);
- ``peaks``, ``peak_mask``, ``threshold_db``: the heads' reading of the generated signal (labels by the model, not
  by a clinician: the file's ``generator_params`` say so);
- ``patient_id``: ``gen000000``, ... (each recording its own patient), ``ear`` empty.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from abr_lab.checkpoint import checkpoint_config, load_module
from abr_lab.optimized_unet.schema import (
    CLASS_NAMES,
    STATIC_NAMES,
    STATIC_RANGES,
    THRESHOLD_RANGE,
    ABRRecords,
    write_abr_file,
)
from abr_lab.predict import batches, parse_count, resolve_device

OPTIONS: dict[str, str] = {
    "ckpt_path": "the checkpoint of a model trained with generation (required)",
    "n": "how many recordings (required)",
    "out": "the HDF5 file to write (required; never overwrites the checkpoint)",
    "label": "generate only this class: a name (NEUROPATHY) or index; default drawn from the train split",
    "temperature": "spread of the parameter prior (default 1.0; 0 = the mixtures' means)",
    "use_constraints": "keep parameters inside the train split's ranges: true (default) or false",
    "steps": "DDIM steps (default: the model's, model.diffusion.sample_steps)",
    "guidance_scale": "classifier-free guidance w (default: the model's)",
    "seed": "random seed (default 0): the same seed gives the same file",
    "batch_size": "recordings per sampling batch (default 256)",
    "device": "cpu (default), cuda or cuda:<index>",
}
USAGE = (
    "usage: python generate.py ckpt_path=<checkpoint> n=<count> out=<file.h5> ["
    + "] [".join(f"{k}=..." for k in list(OPTIONS)[3:])
    + "]"
)


def parse_label(value: str | int | None) -> int | None:
    """A class name (any case) or index -> index; None stays None."""
    if value is None:
        return None
    text = str(value).strip()
    names = [name.lower() for name in CLASS_NAMES]
    if text.lower() in names:
        return names.index(text.lower())
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(CLASS_NAMES):
        return int(text)
    raise ValueError(f"label={value!r}: use one of {', '.join(CLASS_NAMES)} or an index 0-{len(CLASS_NAMES) - 1}")


def parse_bool(value: str | bool) -> bool:
    """true / false (also 1 / 0, yes / no, any case) -> bool."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{value!r}: use true or false")


def generate(
    ckpt_path: str | Path,
    n: int,
    out: str | Path,
    *,
    label: int | None = None,
    temperature: float = 1.0,
    use_constraints: bool = True,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> Path:
    """Generate `n` recordings with the checkpoint's model and write them to `out` (see the module docstring)."""
    ckpt_path, out = Path(ckpt_path), Path(out)
    if out.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"out={str(out)!r}: give an HDF5 file name ending in .h5")
    if out.resolve() == ckpt_path.resolve():
        raise ValueError(f"out={str(out)!r} is the checkpoint itself: choose another file")
    cfg = checkpoint_config(ckpt_path)
    module = load_module(ckpt_path, cfg).to(resolve_device(device))
    if getattr(module, "diffusion", None) is None:
        raise ValueError(f"{ckpt_path}: this model was trained without generation (train with experiment=unet_joint)")
    generator = torch.Generator(device=module.device).manual_seed(seed)
    parts: list[dict[str, np.ndarray]] = []
    for part in batches(n, batch_size):
        size = part.stop - part.start
        labels = None if label is None else torch.full((size,), label, dtype=torch.long)
        result = module.generate_joint(
            size,
            temperature=temperature,
            use_constraints=use_constraints,
            steps=steps,
            guidance_scale=guidance_scale,
            labels=labels,
            generator=generator,
        )
        parts.append({k: v.cpu().numpy() for k, v in result.items()})
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    fs_hz = 1000.0 * (module.net.signal_length - 1) / float(module.time_span_ms)  # the train data's time axis
    records = to_records(joined, fs_hz=fs_hz, onset_ms=float(module.time_start_ms))
    params: dict[str, Any] = {
        "checkpoint": str(ckpt_path.resolve()),
        "n": n,
        "label": label,
        "temperature": temperature,
        "use_constraints": use_constraints,
        "steps": steps or module.diffusion.sample_steps,
        "guidance_scale": module.diffusion.guidance_scale if guidance_scale is None else guidance_scale,
        "seed": seed,
        "labels_by": "the model's heads (peaks, presence, threshold); label: the conditioning class",
    }
    return write_abr_file(out, records, params, source="generated")


def to_records(result: dict[str, np.ndarray], fs_hz: float, onset_ms: float) -> ABRRecords:
    """`generate_joint`'s outputs (NumPy) as ABR records: heads' readings as labels, absent peaks zeroed, static
    and threshold inside the schema's ranges (an unconstrained draw may leave them)."""
    n = len(result["signal"])
    mask = result["presence_pred"].astype(bool)
    peaks = np.where(mask[..., None], result["peaks_pred"], 0.0).astype(np.float32)
    static = result["static"].astype(np.float64).copy()
    for j, name in enumerate(STATIC_NAMES):
        static[:, j] = np.clip(static[:, j], *STATIC_RANGES[name])
    label = np.where(result["label"] >= 0, result["label"], result["class_pred"]).astype(np.int64)
    return ABRRecords(
        signal=result["signal"].astype(np.float32),
        static=static.astype(np.float32),
        peaks=peaks,
        peak_mask=mask,
        label=label,
        threshold_db=np.clip(result["threshold_pred"], *THRESHOLD_RANGE).astype(np.float32),
        patient_id=np.array([f"gen{i:06d}" for i in range(n)]),
        ear=np.array([""] * n),
        fs_hz=fs_hz,
        onset_ms=onset_ms,
    )


def parse_arguments(argv: Sequence[str]) -> dict[str, str]:
    """``key=value`` arguments; unknown keys and missing required ones are errors naming them."""
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise SystemExit(f"argument {arg!r}: expected key=value\n{USAGE}")
        if key not in OPTIONS:
            raise SystemExit(f"unknown option {key!r}; accepted: {', '.join(OPTIONS)}\n{USAGE}")
        if key in args:
            raise SystemExit(f"argument {key!r} is given twice\n{USAGE}")
        args[key] = value
    missing = [key for key in ("ckpt_path", "n", "out") if key not in args]
    if missing:
        raise SystemExit(f"{', '.join(missing)}: required\n{USAGE}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "help") for arg in args_list):
        print(USAGE + "\n\noptions:\n" + "\n".join(f"  {k:16s} {v}" for k, v in OPTIONS.items()))
        return
    args = parse_arguments(args_list)
    try:
        out = generate(
            args["ckpt_path"],
            parse_count("n", args["n"]),
            args["out"],
            label=parse_label(args.get("label")),
            temperature=float(args.get("temperature", 1.0)),
            use_constraints=parse_bool(args.get("use_constraints", "true")),
            steps=parse_count("steps", args["steps"]) if "steps" in args else None,
            guidance_scale=float(args["guidance_scale"]) if "guidance_scale" in args else None,
            seed=int(args.get("seed", 0)),
            batch_size=parse_count("batch_size", args.get("batch_size"), 256),
            device=args.get("device", "cpu"),
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"generate.py: error: {err}") from err
    print(f"{args['n']} generated recordings written to {out}")


if __name__ == "__main__":
    main()
