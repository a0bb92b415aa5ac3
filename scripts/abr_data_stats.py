"""The simulator's figures beside the clinical set's (the numbers quoted in the README's "ABR data" section).

    python scripts/abr_data_stats.py [hydra overrides, e.g. data=abr_small data.simulator.seed=3]

Simulates the dataset the `data=abr` config describes (in memory; nothing is written) and prints recording counts,
class shares, wave V presence / latency / amplitude overall and by class, the residual noise, how tall wave V is
near threshold, and Fmp with and without a response.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from abr_lab.config import compose_config
from abr_lab.optimized_unet.generator import NEUROPATHY, NORMAL, SimulatorSpec, simulate
from abr_lab.optimized_unet.schema import CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]
# ABR_PHYSIOLOGY.md: the clinical set (51,961 recordings, 2,038 patients, mostly infants)
CLINICAL = {
    "class share %": "79.7 / 0.8 / 10.6 / 3.3 / 5.6",
    "wave V present %": "74.6",
    "wave V latency ms": "7.83 ± 1.71",
    "wave V amplitude µV": "0.17 ± 0.16",
    "wave V present by class %": "79.8 / 26.6 / 62.9 / 2.2 / 71.8",
    "residual noise nV (median)": "~20 children, ~40 adults",
}


def stats(spec: SimulatorSpec) -> dict[str, str]:
    """The figures of one simulated dataset, formatted like `CLINICAL`."""
    sim = simulate(spec)
    r = sim.records
    v, fmp = r.peak_mask[:, 2], r.static[:, 3]
    lat, amp = r.peaks[v, 2, 0], r.peaks[v, 2, 1]
    classes = range(len(CLASS_NAMES))
    shares = np.bincount(r.label, minlength=len(CLASS_NAMES)) / len(r)
    near = v & (sim.sensation_db <= 10)
    clear = v & (sim.sensation_db >= 40) & (r.label == NORMAL)
    noise_only = ~v & (r.label != NEUROPATHY)  # a neuropathic ear's cochlear microphonic is a response to Fmp
    noise = sim.residual_noise_uv
    return {
        "patients / recordings": f"{spec.num_patients} / {len(r)}",
        "class share %": " / ".join(f"{100 * s:.1f}" for s in shares),
        "wave V present %": f"{100 * v.mean():.1f}",
        "wave V latency ms": f"{lat.mean():.2f} ± {lat.std():.2f}",
        "wave V amplitude µV": f"{amp.mean():.2f} ± {amp.std():.2f}",
        "wave V present by class %": " / ".join(f"{100 * v[r.label == c].mean():.1f}" for c in classes),
        "residual noise nV (median)": f"{1000 * np.median(sim.residual_noise_uv):.0f}",
        "wave V / noise RMS, 0-10 dB above threshold (median)": f"{np.median(amp[near[v]] / noise[near]):.1f}",
        "Fmp, noise only (median)": f"{np.median(fmp[noise_only]):.2f}",
        "Fmp > 3.1: clear responses / noise only %": f"{100 * (fmp[clear] > 3.1).mean():.0f} / "
        f"{100 * (fmp[noise_only] > 3.1).mean():.1f}",
    }


def main(overrides: list[str]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(["data=abr", *overrides], output_dir=tmp, root_dir=REPO)
    spec = SimulatorSpec.from_dict(OmegaConf.to_container(cfg.data.simulator, resolve=True))
    figures = stats(spec)
    width = max(map(len, figures))
    print(f"{'':{width}}  {'simulator':>32}  clinical set")
    for key, value in figures.items():
        print(f"{key:{width}}  {value:>32}  {CLINICAL.get(key, '')}")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
