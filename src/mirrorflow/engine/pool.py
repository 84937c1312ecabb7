"""The engine's one worker pool: processes for independent pieces of work (sweep units, transformer groups).

* **Start method.** ``fork`` while this process has a single thread (workers inherit torch and the experiment
  instead of re-importing them), ``spawn`` otherwise (forking a threaded process can deadlock). Not
  ``forkserver``: its server keeps the ``sys.path`` of the moment it started, so a later plug-in experiment
  is not found.
* **No orphans.** A worker ignores Ctrl-C (SIGINT reaches the whole process group; the parent decides) and
  dies with its parent (Linux ``PR_SET_PDEATHSIG``), so a killed command leaves no workers behind.
* **Failures.** A piece of work that raises, or whose worker dies (e.g. out of memory), goes to
  ``on_error(item, exc)`` and the pool goes on; without ``on_error`` the first failure stops the pool (queued
  work cancelled, workers terminated) and is raised in the caller (a ``MirrorflowError`` keeps its one-line
  message). Ctrl-C stops the pool the same way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def worker_init() -> None:
    """Pool worker: ignore SIGINT and die with the parent (``PR_SET_PDEATHSIG``; module docstring)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # parent already gone
            os._exit(1)
    except Exception:  # pragma: no cover - not Linux
        pass


def pool_context():
    """The start method of the module docstring: ``fork`` in a single-threaded process, else ``spawn``."""
    import multiprocessing as mp
    import threading

    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return mp.get_context("fork")
    return mp.get_context("spawn")


def run_pool(
    fn: Callable[[T], Any],
    items: Sequence[T],
    workers: int,
    on_result: Callable[[T, Any], None] | None = None,
    on_error: Callable[[T, BaseException], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> None:
    """``fn(item)`` for every item on ``min(workers, len(items))`` processes (module docstring);
    ``on_result(item, result)`` in this process as each ends, in the order they end.

    ``on_start()`` is called once the workers exist (e.g. so that a progress bar's thread starts after the
    fork). ``fn`` and the items must be picklable (a module-level function)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(
        max_workers=max(1, min(workers, len(items))), mp_context=pool_context(), initializer=worker_init
    )
    try:
        futures = {pool.submit(fn, item): item for item in items}  # with fork: all workers start here
        if on_start is not None:
            on_start()
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    result = f.result()
                except Exception as e:  # fn raised, or the worker process died
                    if on_error is None:
                        raise
                    on_error(futures[f], e)
                    continue
                if on_result is not None:
                    on_result(futures[f], result)
    except BaseException:  # a failure without on_error, Ctrl-C, or an error in a callback: stop now
        terminate(pool)
        raise
    pool.shutdown(wait=True)


def terminate(pool: Any, grace: float = 2.0) -> None:
    """Cancel the queued work and terminate the pool's processes (SIGTERM, then SIGKILL after ``grace`` s)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
