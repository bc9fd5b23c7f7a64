"""One log format for every script; quiet on non-main processes."""
from __future__ import annotations

import logging
import os
import sys


def get_logger(name: str = "gfriend") -> logging.Logger:
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        rank = int(os.environ.get("RANK", "0"))
        logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        logger.propagate = False
    return logger
