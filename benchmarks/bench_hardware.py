"""What this machine's processor can do: its matrix-multiply rate in fp32 and bf16, measured now,
and the instruction sets that decide whether bf16 pays on a CPU (AMX, AVX-512 BF16).

    .venv/bin/python -m benchmarks.bench_hardware [--size 1024 --seconds 2]

The peak a model's forward or training step should be compared with: a benchmark that reports
achieved GFLOP/s divides by these. bf16 is only faster where the CPU has bf16 instructions; on
others it is emulated and several times slower than fp32.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.hardware import cpu_flags  # noqa: E402


def matmul_gflops(dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """GFLOP/s of square (size x size) @ (size x size) products in `dtype`, repeated for about
    `seconds` after one warm-up product; 2 * size^3 floating-point operations each."""
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or n == 0:
        torch.mm(a, b)
        n += 1
    return 2 * size**3 * n / elapsed / 1e9


def main(argv=None) -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args(argv)
    name, flags = cpu_flags()
    print(f"{name}; torch threads={torch.get_num_threads()}; bf16 instructions: {', '.join(flags) or 'none'}")
    rates = {label: matmul_gflops(dtype, a.size, a.seconds)
             for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"| dtype | matmul {a.size}^3 GFLOP/s | vs fp32 |\n|---|---|---|")
    for label, rate in rates.items():
        print(f"| {label} | {rate:,.1f} | {rate / rates['fp32']:.2f}x |")


if __name__ == "__main__":
    main()
