"""Rich progress bars that disappear cleanly when disabled (CI logs, tests)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(self, progress: Progress | None, task) -> None:
        self.progress, self.task = progress, task

    def advance(self, status: str = "", n: int = 1) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n, status=status)


@contextmanager
def progress_bar(title: str, total: int, enabled: bool = True, start: int = 0):
    """``with progress_bar("GRPO", steps) as bar: bar.advance("reward 0.5")``."""
    if not enabled:
        yield _Bar(None, None)
        return
    progress = Progress(
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with progress:
        task = progress.add_task(title, total=total, completed=start, status="")
        yield _Bar(progress, task)
