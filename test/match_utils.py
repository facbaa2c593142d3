"""One way for the tests to say "the same instances": equal counts and every centroid within 5 cm, both ways."""
from __future__ import annotations

import numpy as np


def assert_same_centroids(got, want, tol_m: float = 0.05) -> np.ndarray:
    """Centroids (N, 3) of two maps of the same scene; returns, per ``got`` row, the index of its nearest ``want``."""
    got, want = np.asarray(got, float).reshape(-1, 3), np.asarray(want, float).reshape(-1, 3)
    assert len(got) == len(want) > 0, (len(got), len(want))
    dist = np.linalg.norm(got[:, None] - want[None], axis=2)
    assert np.all(dist.min(axis=1) < tol_m) and np.all(dist.min(axis=0) < tol_m), dist.min(axis=1)
    return dist.argmin(axis=1)
