"""Running one function at several torch thread counts (results that must not depend on it)."""

from __future__ import annotations

import torch


def at_thread_counts(fn, counts=(1, 3)) -> list:
    """``fn()`` once at each torch thread count in ``counts``, the caller's count restored."""
    before = torch.get_num_threads()
    results = []
    try:
        for n in counts:
            torch.set_num_threads(n)
            results.append(fn())
    finally:
        torch.set_num_threads(before)
    return results
