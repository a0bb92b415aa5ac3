"""The Gloo process group is destroyed at exit in every process that imported abr_lab."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

from abr_lab.distributed import destroy_at_exit

REPO = Path(__file__).resolve().parents[1]

# An atexit handler registered before `import abr_lab` runs after abr_lab's (last in, first out): it sees what
# abr_lab's handler left behind.
PROGRAM = """
import atexit, sys
from pathlib import Path
import torch.distributed as dist

report = Path(sys.argv[1])
atexit.register(lambda: report.write_text(str(dist.is_initialized())))
import abr_lab  # noqa: E402

dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=0, world_size=1)
assert dist.is_initialized()
"""


def test_importing_abr_lab_destroys_the_process_group_at_exit(tmp_path: Path) -> None:
    report = tmp_path / "initialized_after_abr_lab.txt"
    args = [sys.executable, "-c", PROGRAM, str(report), str(tmp_path / "store")]
    subprocess.run(args, cwd=REPO, check=True, timeout=120)
    assert report.read_text() == "False"


def test_destroy_at_exit_destroys_a_live_group_and_is_then_a_no_op(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        destroy_at_exit()
        assert not dist.is_initialized()
        destroy_at_exit()  # nothing left to destroy: no error
    finally:  # never leave a group to the tests that follow
        if dist.is_initialized():
            dist.destroy_process_group()
