"""Module-level task functions for the run-pool tests (worker processes import them)."""


def square(world, x):
    assert world is not None  # every worker prepared the world
    return x * x


def fail_on(world, x):
    raise ValueError(f"bad input {x}")


def write_after_pause(world, path, seconds):
    import time
    from pathlib import Path

    time.sleep(seconds)
    Path(path).write_text("a was here")
    return "written"


def read_file(world, path):
    from pathlib import Path

    return Path(path).read_text()  # FileNotFoundError when it ran before its writer finished


def thread_counts(world):
    """(torch's threads, the most threads any BLAS/OpenMP pool holds) in this process."""
    import sklearn.linear_model  # noqa: F401  (its OpenMP and scipy's BLAS loaded, as in a probe)
    import torch
    from threadpoolctl import threadpool_info

    return torch.get_num_threads(), max(p["num_threads"] for p in threadpool_info())
