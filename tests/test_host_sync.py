"""`abr_lab.host_sync`: which ops count as host syncs, whose line is blamed, what is left out (optimiser, data
loading), and how the counts become per-step figures."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from abr_lab.host_sync import HostSyncCounter


def _where(counter: HostSyncCounter) -> set[tuple[str, str]]:
    """(kind, function) of every counted caller."""
    return {(kind, where.rsplit(" ", 1)[1]) for kind, where in counter.counts}


def test_reads_and_value_shaped_ops_are_counted_with_the_line_that_asked():
    x = torch.arange(6.0)

    def reads() -> None:
        x.sum().item()
        float(x.max())
        if x.min() >= 0:  # bool() of a tensor
            pass
        x.tolist()  # no op on a CPU tensor: caught as a method
        x.cpu()

    def shapes() -> None:
        x[x > 2]  # boolean-mask index
        torch.nonzero(x)
        x.unique()
        torch.repeat_interleave(torch.tensor([1, 2]))  # also a tensor from host data

    with HostSyncCounter() as counter:
        reads()
        shapes()
    assert counter.total("read") == 5 and counter.total("shape") == 4 and counter.total("host_data") == 1
    assert _where(counter) == {("read", "reads"), ("shape", "shapes"), ("host_data", "shapes")}
    ((kind, where),) = [key for key in counter.counts if key[0] == "host_data"]
    assert where.startswith("tests/test_host_sync.py:")  # the caller's file and line, from the package root


def test_ops_that_let_the_host_run_ahead_are_not_counted():
    x = torch.randn(4, 3, requires_grad=True)
    with HostSyncCounter() as counter:
        y = torch.full((), 2.0) * x  # a fill, not a copy of host data
        loss = y.relu().mean() + x[torch.tensor([0, 2])].sum()  # integer indices need no nonzero
        loss.backward()
        torch.repeat_interleave(torch.arange(3), torch.ones(3, dtype=torch.long), output_size=3)
        torch.where(x > 0, x, 0.0)
    assert counter.total("read") == counter.total("shape") == 0
    assert counter.total("host_data") == 1  # torch.tensor([0, 2]) only


def test_the_optimiser_and_data_loading_are_left_out():
    class Items(Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.from_numpy(np.full(2, float(torch.tensor(i).item())))  # host work before the batch moves

    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(net.parameters())  # reads its step count (a host tensor) with .item()
    with HostSyncCounter() as counter:
        for batch in DataLoader(Items(), batch_size=2):
            net(batch.float()).sum().backward()
            optimizer.step()
    assert counter.total() == 0


def test_only_the_active_window_is_counted_and_reported_per_step():
    x = torch.ones(3)
    with HostSyncCounter(active=False) as counter:
        x.sum().item()  # before the window
        counter.active = True
        for _ in range(4):
            x.sum().item()
            x[x > 0]
        counter.active = False
        x.sum().item()
    report = counter.per_step(4)
    assert report["read"] == 1.0 and report["shape"] == 1.0 and report["host_data"] == 0.0
    assert sorted(report["where"].values()) == [1.0, 1.0]
    assert all(key.split()[0] in ("read", "shape") for key in report["where"])


def test_the_methods_it_watches_are_torch_s_own_again_afterwards():
    before = {name: torch.Tensor.__dict__.get(name) for name in ("tolist", "cpu")}
    with HostSyncCounter():
        assert torch.Tensor.tolist is not before["tolist"]
    assert {name: torch.Tensor.__dict__.get(name) for name in ("tolist", "cpu")} == before
    assert torch.ones(2).tolist() == [1.0, 1.0]
