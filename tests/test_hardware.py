"""The processor's bf16 instructions (utils.hardware) and its matrix-multiply rate (benchmarks.bench_hardware)."""
from benchmarks.bench_hardware import matmul_gflops
from utils.hardware import cpu_flags


def test_cpu_flags_name_the_bf16_instructions_present(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    assert cpu_flags(str(info)) == ("Test CPU 9000", ["amx_bf16", "amx_tile", "avx512f"])
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_flags(str(info)) == ("Old CPU", [])
    assert cpu_flags(str(tmp_path / "missing")) == ("unknown", [])


def test_the_matmul_rate_counts_two_flops_per_multiply_add(monkeypatch):
    import torch

    import benchmarks.bench_hardware as hw

    clock = iter([0.0, 0.5, 1.0, 1.5])  # the start, then a reading before each product: 2 products by 1.5 s
    monkeypatch.setattr(hw.time, "perf_counter", lambda: next(clock))
    assert matmul_gflops(torch.float32, size=10, seconds=1.2) == 2 * 10**3 * 2 / 1.5 / 1e9
