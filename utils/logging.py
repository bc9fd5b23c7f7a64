"""One log format for every script; quiet on non-main processes."""
from __future__ import annotations

import logging
import os
import sys


class StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record, not as it was when the logger was made, so a
    script's `main` run under a redirect (a notebook, a test) still shows its log there."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def get_logger(name: str = "gfriend") -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        rank = int(os.environ.get("RANK", "0"))
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        logger.propagate = False
    return logger
