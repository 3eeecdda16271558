"""An uploaded file held in memory that readers taking a path can read as they read a file on disk.

`InMemoryFile.holding("rows.csv", data)` is a path named like the upload (its name, suffix and str are the
upload's, so readers dispatch on the suffix and errors name the file) whose bytes live in an anonymous memory
file (Linux memfd): open(), pandas, PIL and the like reach them through os.fspath; nothing is written to disk.
Close it (or use it as a context manager) to free the memory.
"""

from __future__ import annotations

import os
from pathlib import PosixPath
from typing import Any


class InMemoryFile(PosixPath):
    _fd: int | None = None

    @classmethod
    def holding(cls, name: str, data: bytes) -> InMemoryFile:
        """A path named `name` (a bare file name) that reads `data`."""
        self = cls(name)
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        self._fd = fd
        return self

    def __fspath__(self) -> str:
        # /proc/self/fd/N opens the memory file afresh: every reader starts at its first byte
        return f"/proc/self/fd/{self._fd}" if self._fd is not None else super().__fspath__()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InMemoryFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
