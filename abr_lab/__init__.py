"""abr_lab: Lightning + Hydra training for signal and vision model families."""
