"""The error hierarchy, in the spirit of IREE's status codes.

Every error the project raises on purpose is a `fibergrid.Error` (re-exported there). The message
names the object and the value that was wrong, e.g. "dispatch 'saxpy': binding 1 range
[0, 4096) is outside buffer of 2048 bytes".
"""


class Error(Exception):
    """Root of every fibergrid error."""


class InvalidArgument(Error, ValueError):
    """A value the caller passed is malformed or of the wrong kind (shape, dtype, count)."""


class OutOfRange(Error, IndexError):
    """An offset, length or index falls outside the object it addresses."""


class FailedPrecondition(Error):
    """The object is in the wrong state for the call (e.g. recording into an ended command buffer)."""


class DeadlineExceeded(Error, TimeoutError):
    """A wait ran past its timeout."""


class ResourceExhausted(Error, MemoryError):
    """An allocation or a fixed-capacity table is full."""


class Aborted(Error):
    """Work failed while running (a kernel returned non-zero, a semaphore was failed)."""


class Unavailable(Error):
    """A driver, device or format is not available here."""


class Unimplemented(Error, NotImplementedError):
    """A known operation that this build does not support yet."""
