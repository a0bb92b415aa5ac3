"""abr_lab: Lightning + Hydra training for signal and vision model families."""

import atexit

from abr_lab.distributed import destroy_at_exit

atexit.register(destroy_at_exit)  # CPU DDP: the Gloo process group destroyed before interpreter finalisation
