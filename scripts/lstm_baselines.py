"""Test-split MSE of the classical baselines of the LSTM extractor task (Kalman filter, band-pass, zero).

python scripts/lstm_baselines.py [hydra overrides, e.g. data.noise_std=0.2]
"""

from __future__ import annotations

import json
import sys

import hydra

from abr_lab.config import compose_config
from abr_lab.lstm_extractor.baselines import evaluate_baselines


def baselines(overrides: list[str]) -> dict[str, dict[str, float]]:
    cfg = compose_config(["model=lstm_extractor", *overrides])
    if cfg.data.noise_model != "per_signal":
        raise SystemExit(
            "baselines are defined for noise_model=per_signal; under per_step the mixture carries no information "
            "about the target, and the optimal estimator is the clock sin(2πft) itself (MSE 0)"
        )
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    return evaluate_baselines(datamodule, settle_s=cfg.model.settle_s)


if __name__ == "__main__":
    print(json.dumps(baselines(sys.argv[1:]), indent=2))
