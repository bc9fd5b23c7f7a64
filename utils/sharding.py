"""Fixed chunks of work dealt to processes, with append-only logs that make a stopped run resumable.

Refinement and evaluation both cut their items into chunks by position, give every chunk its own
seed, and deal the chunks round-robin to the processes of `accelerate launch` / torchrun (or to
the one process of a plain run). Each process appends every finished chunk's records to its own
log (`<stem>.jsonl` alone, `<stem>.rankN.jsonl` with several processes); a restart keeps the
complete chunks found in any log and redoes the rest. Process 0 then holds the records of every
chunk in chunk order: the same records whatever the number of processes.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable, Hashable

from tqdm.auto import tqdm

from utils.config import has_accelerator
from utils.fingerprint import changed_keys
from utils.io import DataError, append_jsonl, read_jsonl_tolerant, write_json, write_jsonl
from utils.logging import get_logger

log = get_logger("sharding")


def process_state():
    """This process's place among those `accelerate launch` / torchrun started (or the only one):
    on a machine without GPUs they form one gloo group on the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=not has_accelerator())


def check_fingerprint(path: str, args, model_name_or_path: str, exclude: tuple[str, ...],
                      extra: dict | None = None) -> None:
    """Refuse to mix the logs of runs with different settings: the first run writes its settings
    (every field of the `args` dataclass but `exclude`, plus the model and `extra`) to `path`, a
    later one must match them."""
    fingerprint = {k: v for k, v in dataclasses.asdict(args).items() if k not in exclude}
    fingerprint["model_name_or_path"] = model_name_or_path
    fingerprint.update(extra or {})
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        changed = changed_keys(old, fingerprint)
        if changed:
            raise DataError(f"{path}: output holds a run with other settings ({', '.join(changed)}); "
                            "use a new output location or delete it")
    else:
        write_json(path, fingerprint)


def resumable_work_dir(output_file: str, args, model_name_or_path: str,
                       exclude: tuple[str, ...] = ("output_file", "max_items")):
    """(process state, `<output_file>.parts/`): where each process logs its finished chunks, so a
    stopped evaluation or labelling run resumes; a rerun with other settings is refused."""
    state = process_state()
    work_dir = output_file + ".parts"
    if state.is_main_process:
        os.makedirs(work_dir, exist_ok=True)
        check_fingerprint(os.path.join(work_dir, "args.json"), args, model_name_or_path, exclude)
    state.wait_for_everyone()
    return state, work_dir


def log_paths(directory: str, stem: str) -> list[str]:
    """The single-process log and the per-process shards of one stem."""
    shards = sorted(glob.glob(os.path.join(directory, f"{stem}.rank*.jsonl")))
    return [os.path.join(directory, f"{stem}.jsonl"), *shards]


def remove_shards(directory: str, stem: str) -> None:
    for path in log_paths(directory, stem)[1:]:
        os.remove(path)


def run_in_chunks(state, directory: str, stem: str, items: list, size: int, id_of: Callable[[object], str],
                  process: Callable[[int, list], list[dict]], desc: str, item_of: Callable[[dict], str],
                  key_of: Callable[[dict], Hashable] | None = None) -> list[dict] | None:
    """Cut `items` into chunks of `size` by position and run `process(chunk_index, chunk)` on this
    process's unfinished ones, resumably (ChunkedRun): on process 0, every chunk's records in chunk
    order (None elsewhere). `id_of(item)` names an item, `item_of(record)` the item a record belongs
    to, and `key_of(record)` (default: item_of) tells records apart."""
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    chunk_ids = [{id_of(x) for x in chunk} for chunk in chunks]
    run = ChunkedRun(state, directory, stem, chunk_ids, item_of, key_of or item_of)
    return run.run(lambda c: process(c, chunks[c]), desc)


class ChunkedRun:
    """One resumable, sharded pass over `chunks`.

    chunk_ids[c] is the set of item ids of chunk c; `item_of(record)` names the item a record
    belongs to and `key_of(record)` identifies a record, so that one found in two logs counts once.
    """

    def __init__(self, state, directory: str, stem: str, chunk_ids: list[set[str]],
                 item_of: Callable[[dict], str], key_of: Callable[[dict], Hashable]):
        self.state, self.directory, self.stem = state, directory, stem
        self.chunk_ids, self.item_of, self.key_of = chunk_ids, item_of, key_of

    def finished(self) -> dict[int, list[dict]]:
        """Records of the chunks complete in the logs; partial chunks are left out (redone)."""
        records, seen = [], set()
        for path in log_paths(self.directory, self.stem):
            for r in read_jsonl_tolerant(path):
                key = self.key_of(r)
                if key not in seen:
                    seen.add(key)
                    records.append(r)
        chunk_of = {i: c for c, ids in enumerate(self.chunk_ids) for i in ids}
        by_chunk: dict[int, list[dict]] = {}
        present = set()
        for r in records:  # one pass, keeping the log order within each chunk
            item = self.item_of(r)
            present.add(item)
            if item in chunk_of:
                by_chunk.setdefault(chunk_of[item], []).append(r)
        return {c: by_chunk.get(c, []) for c, ids in enumerate(self.chunk_ids) if ids <= present}

    def run(self, process: Callable[[int], list[dict]], desc: str) -> list[dict] | None:
        """Process this process's unfinished chunks with `process(chunk_index)`; on process 0
        return every chunk's records in chunk order (None elsewhere)."""
        state = self.state
        sizes = [len(ids) for ids in self.chunk_ids]  # items per chunk, for the progress bar
        mine = [c for c in range(len(self.chunk_ids)) if c % state.num_processes == state.process_index]
        done = self.finished()
        state.wait_for_everyone()  # everyone has read the logs before any is rewritten
        name = self.stem if state.num_processes == 1 else f"{self.stem}.rank{state.process_index}"
        my_log = os.path.join(self.directory, f"{name}.jsonl")
        write_jsonl(my_log, [r for c in mine if c in done for r in done[c]])  # drops partial chunks
        if done and state.is_main_process:
            log.info("%s: resuming, %d of %d chunks already done", desc, len(done), len(self.chunk_ids))
        bar = tqdm(total=sum(sizes[c] for c in mine), initial=sum(sizes[c] for c in mine if c in done),
                   unit="item", desc=desc, disable=not state.is_local_main_process)
        for c in mine:
            if c not in done:
                append_jsonl(my_log, process(c))
                bar.update(sizes[c])
        bar.close()
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        done = self.finished()
        missing = [c for c in range(len(self.chunk_ids)) if c not in done]
        if missing:
            raise RuntimeError(f"chunks {missing[:5]} have no records after all processes finished")
        return [r for c in range(len(self.chunk_ids)) for r in done[c]]
