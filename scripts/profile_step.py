"""Where the bare `dropout_steplr` training step goes: `torch.profiler` over N steps on ready random tensors.

No data loading, no Lightning: `DropoutGapNet` on a random batch of 64, NLL, SGD (lr 0.01, momentum 0.9), after
some warm-up steps; prints the profiler's table of ops by self CPU time. The figures and their machines:
docs/speed.md#where-the-step-goes and results/bench/.

    python scripts/profile_step.py --foreach                        # Intel Xeon, 2 threads, 100 steps (the default)
    python scripts/profile_step.py --threads 1 --steps 200 --rows 15    # AMD EPYC, fp32
    python scripts/profile_step.py --threads 1 --steps 200 --rows 15 --bf16    # AMD EPYC with AVX512-BF16, bf16
    python scripts/profile_step.py --foreach --channels-last        # or --compile (inductor's kernels profiled)

Run it alone for the times; beside other work only the shares count.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from torch.nn import functional as F

from src.mnist.nets import DropoutGapNet


def main(argv: list[str] | None = None) -> str:
    """Prints the profiler's table and returns it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's, one per core)")
    parser.add_argument("--steps", type=int, default=100, help="profiled steps (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="steps before profiling (default 10)")
    parser.add_argument("--rows", type=int, default=25, help="rows of the table (default 25)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--foreach", action="store_true", help="SGD with multi-tensor kernels, as the recipes train")
    parser.add_argument("--bf16", action="store_true", help="the step under torch.autocast('cpu', bfloat16)")
    parser.add_argument("--channels-last", action="store_true", help="net and batch channels-last")
    parser.add_argument("--compile", action="store_true", help="torch.compile the net (inductor's kernel profile)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    net, x, y = DropoutGapNet(), torch.randn(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))
    if args.channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, foreach=args.foreach)
    if args.compile:
        torch._inductor.config.cpp.enable_kernel_profile = True
        net = torch.compile(net)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad()
        with autocast:
            loss = F.nll_loss(net(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    with torch.profiler.profile() as profile:
        for _ in range(args.steps):
            step()
    table = profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(table)
    return table


if __name__ == "__main__":
    main()
