"""Progress reporting: a rich progress bar with an ETA, or the caller's own ``progress(k)`` callable.

Bars go to stderr, and only when stderr is a terminal: stdout carries the results alone (tables, summaries,
``run directory: ...``), so ``mirrorflow ... | tee out.txt`` or ``> out.txt`` gets no bar in it, and a log
file that stderr is redirected to gets none either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

Progress = Callable[[int], None]


def progress_bar(total: int, description: str):
    """A rich progress bar with an ETA on stderr, drawn only when stderr is a terminal (module docstring);
    returns (the ``rich.progress.Progress``, an ``advance(k=1)`` callable)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    prog = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = prog.add_task(description, total=total)
    return prog, lambda k=1: prog.advance(task, k)


@contextlib.contextmanager
def progress_or_bar(
    progress: Progress | None, total: int, description: str, show: bool = True
) -> Iterator[Progress | None]:
    """Yield ``progress`` when the caller gave one; otherwise (if ``show``) a bar's ``advance``.

    On success the bar is filled (estimated totals may exceed the steps actually run, e.g. runs that
    switch weight decay off early), and it is always stopped.
    """
    if progress is not None or not show:
        yield progress
        return
    prog, advance = progress_bar(total, description)
    prog.start()
    try:
        yield advance
        for t in prog.tasks:
            prog.update(t.id, completed=t.total)
    finally:
        prog.stop()


class SweepProgress:
    """The progress of a sweep: a line with the counts, then a bar over the runs still to do.

    ``sweep(..., progress=p)`` calls ``p(total, skipped, pending)`` once the workers exist and gets the bar's
    ``advance``; use as a context manager so the bar is always stopped.
    """

    def __init__(self, description: str, out, echo: Callable[[str], None]):
        self.description, self.out, self.echo = description, out, echo
        self._bar = None

    def __call__(self, total: int, skipped: int, pending: int):
        self.echo(f"{total} runs in {self.out}: {skipped} finished before, {pending} to run")
        if not pending:
            return None
        self._bar, advance = progress_bar(pending, self.description)
        self._bar.start()
        return advance

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
