"""Strategy glue that Lightning does not ship.

FSDP2Strategy: Lightning's ModelParallelStrategy sizes its data-parallel mesh by the number of nodes and its
tensor-parallel mesh by the devices per node ("auto"). For FSDP2 alone (sharding, no tensor parallelism) the
data-parallel mesh must span every process, whatever the devices and nodes: this fixes that, so that
configs/trainer/fsdp2.yaml scales by --trainer.devices / --trainer.num_nodes only.
"""

from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from proj.compat import set_data_parallel_size


class FSDP2Strategy(ModelParallelStrategy):
    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs: Any) -> None:
        # save_distributed_checkpoint=False gathers one checkpoint file that loads in a single process;
        # set it to True for models too large to gather (each rank then writes its shard).
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            **kwargs,
        )

    def setup_environment(self) -> None:
        set_data_parallel_size(self, self.num_nodes * self.num_processes)
        super().setup_environment()
