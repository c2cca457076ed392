"""A line reader's batches read one ahead by a thread, so that a big file is read while its previous batch loads."""
from __future__ import annotations

import queue
import threading
from typing import Iterator

import pyarrow as pa

from forensics.sources.lines import LineBatches


class read_ahead:
    """The batches of `batches`, the next one read by a thread while the caller works on the current one (its
    DuckDB statements let go of the GIL; the split and the hashing do too): a file of several batches is read while
    it is loaded. At most one batch waits; an error of the reader is raised to the caller at the batch it stopped
    at; a caller that stops early stops the thread. The reader's counters are final once iteration ends."""

    def __init__(self, batches: LineBatches):
        self.batches = batches

    def __iter__(self) -> Iterator[pa.Table]:
        handoff: queue.Queue = queue.Queue(maxsize=1)
        stop, end = threading.Event(), object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for batch in self.batches:
                    if not put(batch):
                        return
                put(end)
            except BaseException as e:       # handed to the caller, raised there
                put(e)

        worker = threading.Thread(target=read, name="read_ahead", daemon=True)
        worker.start()
        try:
            while (item := handoff.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()
