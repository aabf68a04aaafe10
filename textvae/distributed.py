"""Data-parallel training under ``torchrun``: process-group set-up and teardown, and the few
collective operations the training loop needs.

Under ``torchrun --nproc_per_node N -m textvae train ...`` every process trains on its contiguous
share of each global batch inside DistributedDataParallel (nccl on GPU, gloo on CPU). Without
torchrun (``WORLD_SIZE`` unset or 1) every operation here is a no-op on one process.
"""

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: ``rank`` of ``world`` processes, on ``device``."""

    rank: int
    world: int
    device: "object"  # torch.device
    owns_group: bool = False  # setup() joined the process group (close() leaves it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    def wrap(self, model):
        """``model`` inside DistributedDataParallel when there are several processes, else itself."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj) -> list:
        """``obj`` of every process, in rank order (for rank 0 to save every rank's RNG state)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over the processes (in float32, on one process too, so
        that a run's arithmetic does not depend on the number of processes)."""
        import torch

        t = torch.tensor(values, device=self.device)
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every process (so that all stop at the same step)."""
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def max_over(self, value: int) -> int:
        """The largest ``value`` of any process, on every process (a signal one of them received)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())


    def close(self) -> None:
        """Leave the process group if :func:`setup` joined it (one set up by the caller stays)."""
        if self.owns_group:
            teardown()


def resolve_device(name: str):
    """``train.device`` as a torch.device: "auto" is CUDA when available, else the CPU."""
    import torch

    from .errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def setup(device) -> Processes:
    """Join the process group torchrun describes in the environment (a no-op without torchrun);
    on GPU, each process takes the device of its ``LOCAL_RANK``. ``device``: a torch.device or a
    ``train.device`` name."""
    device = resolve_device(device) if isinstance(device, str) else device
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(0, 1, device)
    import torch
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    return Processes(dist.get_rank(), dist.get_world_size(), device, owns)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun job (readable before set-up)."""
    return int(os.environ.get("RANK", "0")) == 0


class Deadline:
    """A time budget (``train.max_minutes``) every process agrees on: checked at every call on one
    process; with several, only when ``sync`` is true, by rank 0 for all (so they stop together)."""

    def __init__(self, minutes: float | None, procs: Processes):
        self.at = time.monotonic() + 60 * minutes if minutes else None
        self.procs, self.passed = procs, False

    def check(self, sync: bool = True) -> bool:
        """True once the budget is spent (and from then on)."""
        if self.at is not None and not self.passed and (self.procs.world == 1 or sync):
            self.passed = self.procs.main_decides(time.monotonic() >= self.at)
        return self.passed
