"""Run jobs on a thread pool and hand each finished row to one writer thread.

Workers compute; only the writer touches the database, and it writes each row as soon as
it arrives, so a killed run keeps everything that finished. The progress bar (rate, ETA)
counts stored rows. A failing job is reported and
skipped (a rerun retries it); Ctrl-C cancels pending jobs and still flushes finished rows.
``write`` returning False means the row's key was already stored (another process running
the same run): it is counted in ``existing``, not in ``done``.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

_STOP = object()


@dataclass
class Summary:
    done: int = 0       # rows this process stored
    failed: int = 0
    existing: int = 0   # answered, but another process had stored the row first
    errors: list[str] = field(default_factory=list)


def execute(jobs: Sequence[Any], work: Callable[[Any], dict], write: Callable[[dict], Any],
            workers: int = 1, desc: str = "eval", already_done: int = 0,
            label: Callable[[Any], str] = str) -> Summary:
    """``write(work(job))`` for every job; returns counts of written and failed jobs."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    summary = Summary()
    rows: queue.Queue = queue.Queue()
    writer_error: list[BaseException] = []

    def writer() -> None:
        while (row := rows.get()) is not _STOP:
            if writer_error:
                continue
            try:
                if write(row) is False:
                    summary.existing += 1
                else:
                    summary.done += 1
                bar.update(1)             # the bar counts stored rows
            except BaseException as exc:  # surfaced in the main thread below
                writer_error.append(exc)

    bar = tqdm(total=already_done + len(jobs), initial=already_done, desc=desc, unit="q",
               dynamic_ncols=True, mininterval=0.5)
    thread = threading.Thread(target=writer, name="eval-writer", daemon=True)
    thread.start()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-worker")
    try:
        futures = {pool.submit(work, job): job for job in jobs}
        for future in as_completed(futures):
            if writer_error:
                break
            try:
                rows.put(future.result())
            except Exception as exc:  # one bad question must not sink the run
                summary.failed += 1
                message = f"{label(futures[future])}: {type(exc).__name__}: {exc}"
                summary.errors.append(message)
                if summary.failed <= 5:
                    tqdm.write(f"failed {message}")
                bar.set_postfix(failed=summary.failed, refresh=False)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        rows.put(_STOP)
        thread.join()
        bar.close()
    if writer_error:
        raise writer_error[0]
    return summary
