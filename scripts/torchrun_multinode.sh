#!/bin/bash
# Multi-node training without a scheduler: run this on every node, with the same MASTER_ADDR / PORT and a
# different NODE_RANK (0 on the master). torchrun starts one process per GPU and sets the ranks.
#
#   node 0:  NODE_RANK=0 MASTER_ADDR=10.0.0.1 NNODES=2 GPUS=8 scripts/torchrun_multinode.sh
#   node 1:  NODE_RANK=1 MASTER_ADDR=10.0.0.1 NNODES=2 GPUS=8 scripts/torchrun_multinode.sh
#
# Extra arguments go to `python -m proj fit` (e.g. --config configs/experiment/cifar10_resnet.yaml).
set -euo pipefail
: "${NODE_RANK:?set NODE_RANK (0 on the master node)}"
: "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}"
NNODES=${NNODES:-2}
GPUS=${GPUS:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
MASTER_PORT=${MASTER_PORT:-29500}
CONFIG=${CONFIG:-configs/default.yaml}

exec python -m torch.distributed.run \
    --nnodes "${NNODES}" --node_rank "${NODE_RANK}" --nproc_per_node "${GPUS}" \
    --master_addr "${MASTER_ADDR}" --master_port "${MASTER_PORT}" \
    -m proj fit --config "${CONFIG}" --config configs/trainer/multinode.yaml \
    --trainer.num_nodes "${NNODES}" --trainer.devices "${GPUS}" "$@"
