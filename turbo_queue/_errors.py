"""The exceptions turbo_queue raises (besides the standard ``queue.Empty``/``queue.Full``)."""

from __future__ import annotations

from typing import Any, Tuple


class TurboQueueError(Exception):
    """Base class of turbo_queue's own errors."""


class UnsupportedPlatformError(TurboQueueError, OSError):
    """The platform lacks something the folder protocol needs (``flock``)."""


class NetworkFilesystemError(TurboQueueError, OSError):
    """The queue folder is on a network filesystem, where flock and rename are not safe."""


class BatchFormatError(TurboQueueError):
    """A batch file has a format version this code does not know; the file is left untouched.

    ``path`` is the file, ``version`` the version it declares.
    """

    def __init__(self, path: str, version: object) -> None:
        super().__init__(
            f"{path}: batch format version {version!r} is not known to this turbo_queue "
            f"(it reads versions 1 to 3); upgrade turbo_queue to read it. The file was left as it is."
        )
        self.path = path
        self.version = version

    def __reduce__(self) -> Tuple[Any, ...]:  # keep the attributes when the error crosses a process boundary
        return type(self), (self.path, self.version)


#: The old name of ``BatchFormatError``, kept for code that catches it.
ShardFormatError = BatchFormatError


class BatchWriteError(TurboQueueError, OSError):
    """Writing a batch failed (disk full, I/O error). The batch was not handed over.

    ``items`` is how many items the failed batch held; they were not handed over.
    The queue stays usable: the next put starts a new batch.
    """

    def __init__(self, message: str, items: int = 0) -> None:
        super().__init__(message)
        self.items = items

    def __reduce__(self) -> Tuple[Any, ...]:
        return type(self), (str(self), self.items)
