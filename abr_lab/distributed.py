"""Process-group teardown that Lightning leaves undone on CPU.

Lightning destroys the default process group at exit only for NCCL. A Gloo group left alive (CPU DDP: `trainer=ddp_sim`,
`trainer=ddp` without a GPU) is torn down during interpreter finalisation, where Gloo's worker threads can still hold
tensors; now and then the process then aborts ("terminate called without an active exception", pytorch#190489) after
training finished, and the launcher reports the run failed. Importing `abr_lab` registers `destroy_at_exit` with
`atexit`, so every process that runs our code (spawned workers unpickle it, relaunched ones import it) destroys its
group while the interpreter is still whole.
"""

from __future__ import annotations

import sys


def destroy_at_exit() -> None:
    """Destroy the default process group if one is alive; a no-op otherwise (and when torch was never imported)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
