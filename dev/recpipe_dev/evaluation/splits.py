"""Train/test splits used by the evaluation protocols. Seeded and deterministic."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from recpipe.domain.catalogue import InteractionLog


def stratified_split(log: InteractionLog, ratio: float, seed: int) -> npt.NDArray[np.bool_]:
    """Per-user random split (Recommenders' `python_stratified_split` semantics): each user's
    rows are shuffled with the seed and the first round(ratio * n) go to train.
    Returns the train mask; the test part is its complement."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    rng = np.random.default_rng(seed)
    train = np.zeros(len(log), np.bool_)
    order = np.argsort(log.users, kind="stable")
    bounds = np.flatnonzero(np.diff(log.users[order])) + 1
    for rows in np.split(order, bounds):
        if len(rows) == 0:
            continue
        shuffled = rows[rng.permutation(len(rows))]
        train[shuffled[: round(ratio * len(rows))]] = True
    return train


def time_split(log: InteractionLog, quantile: float) -> tuple[npt.NDArray[np.bool_], float]:
    """Global temporal split: rows strictly before the `quantile` of timestamps train.
    Returns (train mask, cut timestamp)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    cut = float(np.quantile(log.ts, quantile))
    return log.ts < cut, cut
