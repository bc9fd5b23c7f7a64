"""A 95% percentile bootstrap of a mean over independent units (test items, questions): the one
interval the reports of single judges (voting, best-of-N) print."""
from __future__ import annotations

import numpy as np


def mean_interval(values: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) in points, the units resampled with replacement."""
    x = np.asarray(values, dtype=float)
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    return 100 * x.mean(), 100 * np.percentile(means, 2.5), 100 * np.percentile(means, 97.5)
