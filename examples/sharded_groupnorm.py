"""Patch-parallel GroupNorm with torchrun: each rank holds a horizontal slab of an activation.

    torchrun --nproc_per_node 2 examples/sharded_groupnorm.py          # CPU, gloo
    torchrun --nproc_per_node 4 examples/sharded_groupnorm.py --cuda   # one GPU per rank, NCCL

A patch-parallel VAE decoder splits its feature maps along H across the ranks; convolutions
exchange halo rows with their neighbours (the patch-parallel framework's job: DistriFusion,
xDiT), and GroupNorm needs the statistics of the whole map. Here a block of the decoder
(GroupNorm + SiLU, then a 1x1 convolution, which needs no halo) runs on the slabs, once with
nn.GroupNorm converted by shard_groupnorm, and the result -- forward and the gradients -- is
checked against the same block on the whole map on rank 0.
"""
import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

from groupnorm_cuda.distributed import shard_groupnorm


def block():
    torch.manual_seed(0)
    return nn.Sequential(nn.GroupNorm(32, 256, eps=1e-6), nn.SiLU(), nn.Conv2d(256, 128, 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cuda", action="store_true")
    args = p.parse_args()
    dist.init_process_group("nccl" if args.cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.cuda else torch.device("cpu")
    if args.cuda:
        torch.cuda.set_device(device)

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(1, 256, 96, 96, generator=g) * 3 + 50).to(device)   # the whole map (mean 50)
    rows = [len(r) for r in torch.arange(96).tensor_split(world)]         # uneven slabs are fine
    slab = x.split(rows, dim=2)[rank].contiguous().requires_grad_()

    model = shard_groupnorm(block().to(device), dim=2)  # every nn.GroupNorm -> ShardedGroupNorm
    out = model(slab)
    out.square().mean().backward()                       # any loss over the slabs
    grads = [p.grad for p in model.parameters()]

    # gather the slabs' outputs and dx on rank 0 and compare with the block on the whole map
    outs = [torch.empty(1, 128, r, 96, device=device) for r in rows]
    dxs = [torch.empty(1, 256, r, 96, device=device) for r in rows]
    dist.all_gather(outs, out.detach().contiguous())
    dist.all_gather(dxs, slab.grad.contiguous())
    if rank == 0:
        ref_model = block().to(device)
        xr = x.clone().requires_grad_()
        y = ref_model(xr)
        # the ranks' losses add up: the whole map's loss is the sum of the slabs' losses
        sum(s.square().mean() for s in y.split(rows, dim=2)).backward()
        def rel(a, b):  # max |a - b| / max |b|
            return ((a - b).abs().max() / b.abs().max()).item()

        print("max |y - y_ref| / max |y_ref|       =", rel(torch.cat(outs, 2), y.detach()))
        print("max |dx - dx_ref| / max |dx_ref|    =", rel(torch.cat(dxs, 2), xr.grad))
        # GroupNorm's weight / bias gradients are the whole map's on every rank; the conv's are
        # per slab (sum them over the ranks with an all_reduce; see the README on DDP)
        gn = [p.grad for p in ref_model[0].parameters()]
        print("max |dgamma - ref| / max |ref|      =", rel(grads[0], gn[0]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
