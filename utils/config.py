"""One configuration mechanism for every script.

Arguments are dataclasses parsed by `transformers.HfArgumentParser`. `--config file.yaml` supplies
values for any field; flags given on the command line override them. Unknown YAML keys are an
error, so a typo in a recipe never goes unnoticed.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Sequence

import yaml
from transformers import HfArgumentParser

from utils.io import DataError, atomic_open


def _load_yaml(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: config file not found")
    with open(path, encoding="utf-8") as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise DataError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8; re-encode the file as UTF-8") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: a config must be a mapping of field: value")
    return cfg


def has_accelerator() -> bool:
    """A GPU (or another torch accelerator) is visible: otherwise training and sampling run on CPU."""
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def parse_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None, shared: bool = False,
               defaults: dict[str, Any] | None = None, renamed: dict[str, str] | None = None) -> tuple:
    """Parse `args` (default sys.argv[1:]) into one instance per dataclass.

    Precedence: command-line flag > YAML value (`--config`) > `defaults` (a script's constants; its
    "config" key names the YAML read when no --config is given) > dataclass default. `renamed`
    maps a flag that is gone to what replaces it: given as a flag or a YAML key, it stops with one
    line saying so. With `shared`, a field that several dataclasses define (TRL's configs repeat
    `trust_remote_code`) is one flag that sets it in all of them; otherwise a repeated field is an
    error.
    """
    args = list(sys.argv[1:] if args is None else args)
    defaults = dict(defaults or {})
    config_path = defaults.pop("config", None)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise DataError("--config needs a file path")
        config_path = args[i + 1]
        del args[i : i + 2]
    for old, new in (renamed or {}).items():
        if any(a == f"--{old}" or a.startswith(f"--{old}=") for a in args):
            raise DataError(f"--{old} is now {new}")
    parser = HfArgumentParser(dataclass_types, **({"conflict_handler": "resolve"} if shared else {}))
    known = {a.dest: a for a in parser._actions}
    if "use_cpu" in known and not has_accelerator():
        # TrainingArguments: without use_cpu, processes started by `accelerate launch` or torchrun
        # on a machine without GPUs would each train alone instead of as one gloo group.
        known["use_cpu"].default = True
    cfg = _load_yaml(config_path) if config_path else {}
    for old, new in (renamed or {}).items():
        if old in cfg:
            raise DataError(f"{config_path}: config key '{old}' is now {new}")
    unknown = sorted(k for k in cfg if k not in known)
    if unknown:
        raise DataError(f"{config_path}: unknown config key(s): {', '.join(unknown)}")
    for key, value in {**defaults, **cfg}.items():
        action = known[key]
        if isinstance(value, list) and action.nargs is None:
            value = ",".join(str(v) for v in value)  # comma-separated string fields
        # Values pass through argparse's type conversion only when given as strings.
        action.default = action.type(value) if isinstance(value, str) and action.type else value
        action.required = False
    if "bf16" in known and "dtype" in known and "bf16" not in cfg:
        autocast_where_native(known, args)
    if shared:  # each dataclass takes its fields from one namespace, a shared field included
        namespace = vars(parser.parse_args(args))
        return tuple(t(**{f.name: namespace[f.name] for f in dataclasses.fields(t) if f.init and f.name in namespace})
                     for t in dataclass_types)
    return parser.parse_args_into_dataclasses(args=args, look_for_args_file=False)


def autocast_where_native(known: dict, args: list[str]) -> None:
    """A training script run with --dtype bf16_if_native: bf16 autocast (--bf16) on by default where
    the hardware computes bf16 natively, off elsewhere; a --bf16 flag or config value still decides.
    It must be set before TrainingArguments is built: its mixed precision is fixed then."""
    import argparse

    from utils.hardware import BF16_IF_NATIVE, native_bf16

    given = argparse.ArgumentParser(add_help=False)
    given.add_argument("--dtype", default=known["dtype"].default)
    if given.parse_known_args(args)[0].dtype == BF16_IF_NATIVE:
        known["bf16"].default = native_bf16()


def require(**values) -> None:
    """Fail with one line naming the first required setting that neither a flag nor the config gave."""
    for name, value in values.items():
        if value is None or value == "" or value == []:
            raise DataError(f"--{name} is required (flag or config)")


# The inputs the stage scripts' constants default to, and the command that writes each: a first run
# that skips a step is told which one in a line, not by a traceback from deep inside a loader.
DEFAULT_INPUTS = {"outputs/models/smollm2-135m-instruct": "make real-model",
                  "outputs/data/sft.jsonl": "make data", "outputs/data/prefs.jsonl": "make data",
                  "outputs/data/test.jsonl": "make data", "outputs/sft": "python run_sft.py",
                  "outputs/refine/pairs.jsonl": "python run_preference_refinement.py",
                  "outputs/gfriend": "python run_m_dpo.py"}


def check_default_inputs(*paths: str) -> None:
    """Stop with one line when a default input is not there yet, naming the command that writes it."""
    for path in paths:
        if path in DEFAULT_INPUTS and not os.path.exists(path):
            raise DataError(f"{path}: not found; `{DEFAULT_INPUTS[path]}` writes it")


def check_settings(args, at_least: dict | None = None, above: dict | None = None, at_most: dict | None = None,
                   choices: dict | None = None) -> None:
    """Every named setting of `args` within its bound (an unset None passes), else one line naming it.
    Called before any model is loaded, so a bad number never costs a model load or a sampling run."""
    for name, low in (at_least or {}).items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise DataError(f"--{name} must be at least {low}, got {value}")
    for name, low in (above or {}).items():
        value = getattr(args, name)
        if value is not None and not value > low:
            raise DataError(f"--{name} must be greater than {low}, got {value}")
    for name, high in (at_most or {}).items():
        value = getattr(args, name)
        if value is not None and value > high:
            raise DataError(f"--{name} must be at most {high}, got {value}")
    for name, allowed in (choices or {}).items():
        value = getattr(args, name)
        if value not in allowed:
            raise DataError(f"--{name} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def check_prompt_budget(max_prompt_length: int | None, max_length: int | None) -> None:
    if max_prompt_length is not None and max_length is not None and max_prompt_length >= max_length:
        raise DataError(f"--max_prompt_length {max_prompt_length} leaves no room for a response in "
                        f"--max_length {max_length}")


def resolved_settings(*configs) -> dict[str, Any]:
    """Every plain field of every parsed dataclass, merged: what a run ran with. Scripts save it as
    run_config.yaml; the pipeline compares it to decide whether a stage's output is still valid."""
    merged: dict[str, Any] = {}
    for cfg in configs:
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)  # TrainingArguments hides tokens
        merged.update({k: v for k, v in d.items() if _is_plain(v)})
    return merged


def save_resolved_config(output_dir: str, *configs, name: str = "run_config.yaml") -> str:
    """Write every field of every dataclass, so a run can be repeated exactly."""
    path = os.path.join(output_dir, name)
    with atomic_open(path) as f:
        yaml.safe_dump(resolved_settings(*configs), f, sort_keys=True)
    return path


def _is_plain(v: Any) -> bool:
    if v is None or isinstance(v, (str, int, float, bool)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    return False


def run_main(main, argv: Sequence[str] | None = None) -> None:
    """Run a script's `main`, turning bad input into one line on stderr and exit code 2."""
    try:
        main(argv)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    close_process_group()


def close_process_group() -> None:
    """The processes of `accelerate launch` / torchrun finish together and close their group: one
    that exits with the group still open can abort at shutdown ("terminate called without an active
    exception", seen with gloo on CPU) and so fail the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
