"""What the processor can compute natively, asked once per process: bf16 pays on a CPU only with
bf16 matrix instructions (AMX, AVX-512 BF16), and is emulated, many times slower than fp32, without
them. The machines a recipe runs on differ, so a precision that depends on them is decided here."""
from __future__ import annotations

import functools

# --dtype: bf16 where native_bf16(), fp32 elsewhere (models.loading); training keeps fp32 weights
# and turns bf16 autocast on where it is native (utils.config, models.training).
BF16_IF_NATIVE = "bf16_if_native"
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # either computes bf16 products natively


def cpu_flags(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(model name, which of BF16_FLAGS the CPU has); ("unknown", []) where /proc/cpuinfo is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "unknown", []
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                "unknown")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return name, [f for f in BF16_FLAGS if f in flags]


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """bf16 is computed natively here: a GPU that supports it, or, without a GPU, a CPU with AMX or
    AVX-512 BF16."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return any(f in NATIVE_BF16_FLAGS for f in cpu_flags()[1])
