"""The processes of one evaluation: one, or several under ``accelerate launch`` (each takes every
P-th batch; what they found is gathered, and the main process writes the report)."""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

T = TypeVar("T")


class Distributed:
    """One process, or one of several under ``accelerate launch``."""

    def __init__(self, device: str = "cpu"):
        self.rank, self.world, self.device = 0, 1, None
        try:
            import torch
            from accelerate import PartialState

            # accelerate spreads CPU processes (gloo) only when asked for the CPU explicitly.
            state = PartialState(cpu=str(device).startswith("cpu") or not torch.cuda.is_available())
            self.rank, self.world, self.device = state.process_index, state.num_processes, state.device
        except Exception:  # accelerate missing or unconfigured: one process
            pass

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, items: list) -> list:
        """Every process's ``items``, concatenated, on every process."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of ``items``."""
        return list(items[self.rank :: self.world])
