"""Progress from libraries that only print it: a file-like sink that turns their "i / n" text
(pynndescent's verbose iterations, umap-learn's tqdm epochs) into ``progress(fraction, message)``
calls, so long kNN and UMAP stages report where they are like every other stage."""

from __future__ import annotations

import io
import re
from typing import Callable

__all__ = ["ProgressStream"]

_COUNT = re.compile(r"(\d+)\s*/\s*(\d+)")


class ProgressStream(io.TextIOBase):
    """Write-only text stream: each "i / n" in the text reports ``start + (end - start) * i / n``.

    Parameters
    ----------
    progress : callable ``progress(fraction, message)``
    label : str
        Put before "i of n" in the message, e.g. "UMAP epochs".
    start, end : float
        The share of the stage this library call covers.
    """

    def __init__(self, progress: Callable[[float, str], None], label: str, *, start: float = 0.0,
                 end: float = 1.0):
        super().__init__()
        self._progress, self._label, self._start, self._end = progress, label, start, end
        self._last: tuple[int, int] | None = None
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # print() hands its arguments over one by one: report on whole lines (or tqdm's \r updates)
        self._buffer += text
        *complete, self._buffer = re.split(r"[\r\n]", self._buffer)
        for line in complete:
            self._report(line)
        return len(text)

    def flush(self) -> None:
        pass

    def _report(self, line: str) -> None:
        for done, total in _COUNT.findall(line):
            done, total = int(done), int(total)
            if total > 0 and (done, total) != self._last and done <= total:
                self._last = (done, total)
                self._progress(self._start + (self._end - self._start) * done / total,
                               f"{self._label} {done:,} of {total:,}")
