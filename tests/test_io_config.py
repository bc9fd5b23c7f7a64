import json
import os
from dataclasses import dataclass, field

import pytest

from utils.config import parse_args
from utils.io import DataError, append_jsonl, atomic_open, read_jsonl, read_jsonl_tolerant, write_jsonl


@dataclass
class _Args:
    name: str = field(default="default")
    steps: int = field(default=1)
    rate: float = field(default=0.5)
    flag: bool = field(default=False)


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_yaml_values_apply_and_flags_override(tmp_path):
    cfg = _yaml(tmp_path, "name: from_yaml\nsteps: 7\nrate: 0.25\nflag: true\n")
    (a,) = parse_args([_Args], ["--config", cfg])
    assert (a.name, a.steps, a.rate, a.flag) == ("from_yaml", 7, 0.25, True)
    (a,) = parse_args([_Args], ["--config", cfg, "--steps", "9", "--name", "cli"])
    assert (a.name, a.steps, a.rate) == ("cli", 9, 0.25)
    (a,) = parse_args([_Args], ["--steps", "3"])
    assert (a.name, a.steps) == ("default", 3)


def test_a_scripts_constants_sit_under_its_config_and_flags(tmp_path):
    cfg = _yaml(tmp_path, "steps: 7\n")
    constants = {"config": cfg, "name": "constant", "steps": 2, "rate": 0.75}
    (a,) = parse_args([_Args], [], defaults=constants)  # no arguments: the constants, then their config
    assert (a.name, a.steps, a.rate) == ("constant", 7, 0.75)
    (a,) = parse_args([_Args], ["--name", "flag", "--rate", "0.1"], defaults=constants)
    assert (a.name, a.steps, a.rate) == ("flag", 7, 0.1)
    other = _yaml(tmp_path, "name: other\n")  # --config replaces the constants' config
    (a,) = parse_args([_Args], ["--config", other], defaults=constants)
    assert (a.name, a.steps, a.rate) == ("other", 2, 0.75)


def test_a_flag_that_is_gone_says_what_replaces_it(tmp_path):
    with pytest.raises(DataError, match="^--old_name is now --name$"):
        parse_args([_Args], ["--old_name", "x"], renamed={"old_name": "--name"})
    with pytest.raises(DataError, match="^--old_name is now --name$"):
        parse_args([_Args], ["--old_name=x"], renamed={"old_name": "--name"})
    cfg = _yaml(tmp_path, "old_name: x\n")
    with pytest.raises(DataError, match="config key 'old_name' is now --name"):
        parse_args([_Args], ["--config", cfg], renamed={"old_name": "--name"})


@dataclass
class _Other:
    flag: bool = field(default=False)  # also in _Args, as TRL's configs repeat trust_remote_code
    width: int = field(default=2)


def test_a_field_two_dataclasses_share_is_one_flag_when_asked(tmp_path):
    import argparse

    cfg = _yaml(tmp_path, "flag: true\nwidth: 5\nsteps: 4\n")
    a, o = parse_args([_Args, _Other], ["--config", cfg, "--name", "x"], shared=True)
    assert (a.flag, o.flag, o.width, a.steps, a.name) == (True, True, 5, 4, "x")
    a, o = parse_args([_Args, _Other], ["--config", cfg, "--flag", "false"], shared=True)
    assert (a.flag, o.flag) == (False, False)
    with pytest.raises(argparse.ArgumentError, match="conflicting option"):
        parse_args([_Args, _Other], [])


def test_unknown_yaml_key_is_an_error(tmp_path):
    cfg = _yaml(tmp_path, "nmae: typo\n")
    with pytest.raises(DataError, match="unknown config key.*nmae"):
        parse_args([_Args], ["--config", cfg])


def test_read_jsonl_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": "1", "b": "2"}\n{"a": "1"\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: invalid JSON"):
        read_jsonl(str(p), {"a": str})
    p.write_text('{"a": "1", "b": "2"}\n\n{"b": "2"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:3: missing field 'a'"):
        read_jsonl(str(p), {"a": str})
    p.write_text('{"a": 5}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:1: field 'a' must be str, got int"):
        read_jsonl(str(p), {"a": str})
    p.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_jsonl(str(p))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_open(str(target)) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    write_jsonl(str(target), [{"a": 1}, {"a": 2}])
    assert [json.loads(l) for l in target.read_text().splitlines()] == [{"a": 1}, {"a": 2}]


def test_append_log_tolerates_a_torn_last_line(tmp_path):
    p = str(tmp_path / "log.jsonl")
    append_jsonl(p, [{"i": 0}, {"i": 1}])
    with open(p, "a") as f:
        f.write('{"i": 2, "tor')
    assert read_jsonl_tolerant(p) == [{"i": 0}, {"i": 1}]
