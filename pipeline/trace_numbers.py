"""Every interval and percentage that README.md and docs/ cite must be found in a committed file under
results/: a reader checks a claim against the records, never against a run nobody kept.

    python -m pipeline.trace_numbers          # prints what does not trace; exit 1 if anything

An interval `[a, b]` traces when a results file holds the same two numbers at the same precision,
or the pair negated (`[-b, -a]`: "BT - GFRIEND" against a table of "GFRIEND - BT"); the minus sign's
spelling (− or -) and a `+` do not matter. A percentage traces when the number appears in a results
file as written or as a fraction (48.8% against 0.488). Files are read as git tracks them when the
project is a git checkout (an uncommitted results file proves nothing), gzip'd ones decompressed.
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

from utils.io import open_text

TEXT_SUFFIXES = (".md", ".json", ".jsonl", ".csv", ".txt", ".yaml")
NUMBER = r"[+\-\u2212]?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"\[\s*({NUMBER})\s*,\s*({NUMBER})\s*\]")
PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%")
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+|(?<![\w.])-?\d+(?![\w.])")


def _key(text: str) -> str:
    """A number's text without the sign's spelling: '−0.50' and '-0.50' alike, '+1.2' as '1.2'."""
    text = text.replace("\u2212", "-").lstrip("+")
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def _negated(text: str) -> str:
    key = _key(text)
    return key[1:] if key.startswith("-") else ("-" + key if float(key) != 0 else key)


def results_files(root: str = ".") -> list[str]:
    """The text files under results/ that git tracks (every file there outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "results"], cwd=root, capture_output=True, text=True, check=True)
        paths = out.stdout.split()
    except (OSError, subprocess.CalledProcessError):
        paths = [os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "results", "**", "*"), recursive=True)]
    return sorted(os.path.join(root, p) for p in paths
                  if p.removesuffix(".gz").endswith(TEXT_SUFFIXES) and os.path.isfile(os.path.join(root, p)))


def _read(path: str) -> str:
    with open_text(path) as f:
        return f.read()


class Records:
    """Every interval and number the committed results hold, as comparable keys."""

    def __init__(self, texts: list[str]):
        self.intervals, self.numbers = set(), set()
        for text in texts:
            text = text.replace("\u2212", "-")
            self.intervals.update((_key(a), _key(b)) for a, b in INTERVAL.findall(text))
            for n in DECIMAL.findall(text):
                self.numbers.add(_key(n))
                if "." in n and abs(float(n)) <= 1:  # a fraction, as the percentages it is written as
                    value = abs(float(n)) * 100
                    self.numbers.update(f"{value:.{d}f}" for d in range(3))

    def has_interval(self, low: str, high: str) -> bool:
        return (_key(low), _key(high)) in self.intervals or (_negated(high), _negated(low)) in self.intervals

    def has_number(self, text: str) -> bool:
        return _key(text) in self.numbers


def cited(paths: list[str]):
    """(path, line number, kind, match) of every interval and percentage in the given documents; an
    interval broken over two lines counts, at the line it starts on."""
    for path in paths:
        with open(path, errors="replace") as f:
            text = f.read()
        line_of = lambda m: text.count("\n", 0, m.start()) + 1  # noqa: E731
        for m in INTERVAL.finditer(text):
            if "." in m.group(1) + m.group(2):  # decimals: an interval, not a list like [1, 2]
                yield path, line_of(m), "interval", m
        for m in PERCENT.finditer(text):
            yield path, line_of(m), "percentage", m


def untraced(root: str = ".") -> tuple[int, list[str]]:
    """(how many numbers the documents cite, one line per number found in no committed results file)."""
    records = Records([_read(p) for p in results_files(root)])
    documents = [os.path.join(root, "README.md"), *sorted(glob.glob(os.path.join(root, "docs", "*.md")))]
    count, missing = 0, []
    for path, line, kind, m in cited(documents):
        count += 1
        found = records.has_interval(m.group(1), m.group(2)) if kind == "interval" else records.has_number(m.group(1))
        if not found:
            shown = " ".join(m.group(0).split())
            missing.append(f"{os.path.relpath(path, root)}:{line}: {kind} {shown} is in no committed results/ file")
    return count, missing


def main() -> None:
    count, missing = untraced()
    print("\n".join(missing))
    print(f"{count - len(missing)} of {count} intervals and percentages cited in README.md and docs/ trace to results/")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
