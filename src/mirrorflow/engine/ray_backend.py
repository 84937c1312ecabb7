"""Ray backend for sweeps (``mirrorflow sweep ... --backend ray [--address ADDR]``).

Each unit of a sweep (:mod:`mirrorflow.engine.units`) (one run, or one batch of runs that share data) becomes a
Ray task with ``num_cpus=1``. The task runs :func:`mirrorflow.engine.units.execute_unit` into a
temporary directory on whichever node it lands on and returns the files it wrote; the driver writes them
into the run store (every file atomically, ``summary.json`` last), so the results land in the same store
as the local backend's, with no shared file system needed between the nodes.

Without ``address`` the command starts a local Ray instance (``num_cpus = workers`` or the cores, no
dashboard) and shuts it down at the end. With ``address`` (``HOST:PORT`` of a cluster's head, or
``auto``) it connects to an existing cluster, whose nodes need mirrorflow and its dependencies
installed (the same version as the driver). If Ray is already initialized in this process (a notebook,
a test), that instance is used and left running.

``ray`` is imported only inside these functions: it is an optional extra (``pip install mirrorflow[ray]``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError, MirrorflowError
from ..store import SUMMARY, atomic_write
from .units import Outcome, Unit, execute_unit


def execute_collect(unit: Unit) -> list[tuple[Outcome, dict[str, bytes]]]:
    """Ray task body: run ``unit`` into a temporary directory, return each run's outcome and files."""
    with tempfile.TemporaryDirectory(prefix="mirrorflow-ray-") as tmp:
        outcomes = execute_unit(unit, tmp)
        collected = []
        for o in outcomes:
            root = Path(tmp) / o.run_id
            files = {}
            if root.is_dir():
                for p in sorted(root.rglob("*")):
                    if p.is_file() and not p.name.endswith(".tmp"):
                        files[p.relative_to(root).as_posix()] = p.read_bytes()
            collected.append((o, files))
    return collected


def store_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a run's files into the store: every file atomically, ``summary.json`` last (the done marker)."""
    for name in sorted(files, key=lambda n: n == SUMMARY):
        atomic_write(run_dir / name, files[name])


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on an unreachable head: a TCP connection to ``HOST:PORT`` (or ``ray://HOST:PORT``) within
    ``timeout`` seconds, before ``ray.init`` (which otherwise retries for minutes). ``auto`` is not checked."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address.strip().lower() == "auto":
            return
        raise ConfigError(f"--address must be HOST:PORT (e.g. 10.0.0.5:6379) or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise MirrorflowError(
            f"cannot reach Ray at {address}: {e.strerror or type(e).__name__} (no connection within {timeout:g} s)"
        ) from None


def _init(address: str | None, workers: int | None):
    """Connect to (or start) Ray; returns (ray module, started_here)."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # no per-retry C++ warnings on an unreachable head
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'mirrorflow[ray]'") from None
    import logging

    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            n = workers or len(os.sched_getaffinity(0))
            # address="local": always a new instance of our own, never silently joining another cluster
            ray.init(address="local", num_cpus=n, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"Ray at {address}" if address else "a local Ray instance"
        raise MirrorflowError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else e}") from None
    return ray, True


def run_units(
    make_units: Callable[[int], Sequence[Unit]],
    out: Path,
    address: str | None,
    workers: int | None,
    on_done: Callable[[list[Outcome]], None],
    on_start: Callable[[], None] | None = None,
) -> None:
    """Submit every unit as a Ray task and store results as tasks finish.

    ``make_units(n)`` cuts the work for ``n`` parallel slots: ``workers`` if given, else the cluster's CPUs.
    """
    ray, started = _init(address, workers)
    try:
        slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        units = list(make_units(slots))
        task = ray.remote(num_cpus=1)(execute_collect)
        refs = {task.remote(u): u for u in units}
        if on_start is not None:
            on_start()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                unit = refs[ref]
                try:
                    collected = ray.get(ref)
                except Exception as e:  # the task or its worker died
                    msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    on_done([Outcome(rid, False, msg) for rid in unit.run_ids])
                    continue
                outcomes = []
                for o, files in collected:
                    store_files(out / o.run_id, files)
                    outcomes.append(o)
                on_done(outcomes)
    finally:
        if started:
            ray.shutdown()
