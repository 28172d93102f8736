"""Several training runs at once on one CPU machine: worker processes, one thread per run.

Why: the tiny presets' kernels are too small to keep two cores busy from one process (a
stage-2 step of ``pointbert-tiny`` at batch 32 takes no less time on two threads than on one
here; ``benchmarks/ablation_time.py`` measures the whole plan), so an ablation's independent
runs finish sooner side by side, one core each, than one after another on all cores.

A run's numbers depend on its thread count (torch's CPU kernels split reductions by thread), so
a run trained in a pool of ``jobs`` workers has ``cores // jobs`` threads unless the config fixes
``train.num_threads``; with the same thread count, a run gives the same result bit for bit in a
worker as in the calling process (tested).

``run_tasks`` takes :class:`Task` s whose ``after`` names a task that must finish first (an
``mm-mixing`` run continues its seed's ``fm`` run) and yields ``(key, result)`` as each one
finishes. With ``jobs=1`` everything runs in the calling process, in order, as before. With
more, the longest chains start first (:func:`longest_chain_first`, from each task's ``cost``):
a plan's last runs are then its short ones, and a core idles at the end for at most one of
those instead of a long run started last.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

__all__ = ["Task", "available_cores", "longest_chain_first", "resolve_jobs", "run_tasks"]


@dataclass
class Task:
    """``fn(world, **kwargs)`` under ``key``; ``after``: the key of a task to wait for;
    ``cost``: its expected run time in any unit shared by the tasks (0: unknown), which only
    orders the start of the tasks (:func:`longest_chain_first`)."""

    key: str
    fn: Callable
    kwargs: dict = field(default_factory=dict)
    after: Optional[str] = None
    cost: float = 0.0


def longest_chain_first(tasks: list) -> list:
    """``tasks`` ordered by the cost of the longest chain each one starts (its own cost plus
    that of the tasks waiting for it, transitively), longest first; ties keep their order.

    List scheduling by critical path: on ``jobs`` workers a plan then ends with its shortest
    runs, so the idle time at its end is at most about one short run's length."""
    waiting: dict = {}
    for t in tasks:
        if t.after is not None:
            waiting.setdefault(t.after, []).append(t)
    chain: dict = {}

    def length(t, seen=()):
        if t.key not in chain:
            if t.key in seen:
                raise RuntimeError(f"tasks {sorted(seen)} wait for each other")
            chain[t.key] = t.cost + max((length(w, seen + (t.key,))
                                         for w in waiting.get(t.key, ())), default=0.0)
        return chain[t.key]

    ranked = sorted(range(len(tasks)), key=lambda i: (-length(tasks[i]), i))
    return [tasks[i] for i in ranked]


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_jobs(jobs, cfg, runs: int) -> int:
    """``jobs`` as a count: ``"auto"`` (or 0) is one run per core on a CPU with the embedded
    world, else 1: a GPU, or a data folder (each worker would hold its own copy of the
    features; streamed data's loader workers use the cores anyway). Explicit counts are
    honoured, capped at the number of runs."""
    from .device import resolve_device

    if jobs in (None, "auto", 0, "0"):
        cpu = resolve_device(cfg.train.device).type == "cpu"
        jobs = available_cores() if cpu and cfg.data.root is None else 1
    if isinstance(jobs, str) and jobs.strip().isdigit():
        jobs = int(jobs)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be a positive integer or 'auto', got {jobs!r}")
    return max(1, min(jobs, runs))


_WORLD = None  # the world a worker process prepared once (loaded from the cache)


def _start_worker(base_json: str, threads: int) -> None:
    import json

    import sklearn.linear_model  # noqa: F401  (loads its OpenMP and scipy's BLAS, limited next)
    import torch
    from threadpoolctl import threadpool_limits

    from .config import RunConfig
    from .pipeline import prepare_world

    global _WORLD
    torch.set_num_threads(threads)
    # numpy's and scipy's BLAS and scikit-learn's OpenMP too: at the machine's core count, two
    # workers would oversubscribe the cores (the limits stay set for the worker's life;
    # threadpoolctl limits the libraries loaded so far, hence the import above)
    threadpool_limits(limits=threads)
    _WORLD = prepare_world(RunConfig.from_dict(json.loads(base_json)), progress=False)


def _call(fn, kwargs):
    return fn(_WORLD, **kwargs)


def _named(err: Exception, key: str) -> Exception:
    """``err`` again, its message prefixed with the run it came from."""
    text = f"run {key} failed in its worker process: {err}"
    try:
        return type(err)(text)
    except Exception:  # an exception type with other constructor arguments
        return RuntimeError(f"{text} ({type(err).__name__})")


def run_tasks(tasks: list, jobs: int, base, world) -> Iterator[tuple]:
    """Run ``tasks`` (each ``fn(world, **kwargs)``) on ``jobs`` processes; yield ``(key,
    result)`` as each finishes. ``world``: the calling process's (used when ``jobs == 1``);
    each worker prepares its own from the cache ``base`` names (built already by the caller).
    A failed task stops the pool and raises its error (the same type), naming the task."""
    keys = [t.key for t in tasks]
    for t in tasks:
        if t.after is not None and t.after not in keys:
            raise ValueError(f"task {t.key!r} waits for {t.after!r}, which is not in the plan")
    if jobs <= 1:
        for t in tasks:
            yield t.key, t.fn(world, **t.kwargs)
        return
    threads = max(1, available_cores() // jobs)
    pending, running, done = longest_chain_first(tasks), {}, set()
    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_start_worker,
                             initargs=(base.to_json(), threads)) as pool:
        try:
            while pending or running:
                for t in list(pending):
                    if len(running) < jobs and (t.after is None or t.after in done):
                        running[pool.submit(_call, t.fn, t.kwargs)] = t
                        pending.remove(t)
                if not running:
                    raise RuntimeError(f"tasks {[t.key for t in pending]} wait for each other")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    t = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as err:  # the same type, so callers' handling holds
                        raise _named(err, t.key) from err
                    done.add(t.key)
                    yield t.key, result
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
