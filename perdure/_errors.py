"""The one error hierarchy of perdure.

Every error a caller can see derives from :class:`PerdureError` and carries a
stable ``code`` (what programs match on) and an ``http_status`` (what the HTTP
layer answers with). Messages are for people and may change; codes may not.

This module sits below every layer (storage, actors, runtime all raise these),
so it imports nothing from perdure.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BatchNotFound",
    "ChildCancelled",
    "ChildFailed",
    "CorruptStore",
    "DirectoryLocked",
    "ForeignDirectory",
    "IdempotencyConflict",
    "InvalidInput",
    "InvalidOutput",
    "InvalidSignal",
    "InvalidTransition",
    "NonDeterminismError",
    "NotWaiting",
    "PerdureError",
    "PermissionDenied",
    "RunNotActive",
    "RunNotFound",
    "ScheduleNotFound",
    "SchemaTooNew",
    "SerializationError",
    "SignalConflict",
    "StepFailed",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "UnknownTarget",
    "WaitExpired",
]


class PerdureError(Exception):
    """Base of every perdure error.

    ``code`` is stable and machine-readable; ``detail`` holds structured
    context (run id, field, holder of a lock …) that is safe to serialize.
    """

    code: ClassVar[str] = "PERDURE_ERROR"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail

    def to_dict(self) -> dict[str, Any]:
        """The error as ``{code, message, detail}``, as stored and sent over HTTP."""
        return {"code": self.code, "message": self.message, "detail": self.detail}


class RunNotFound(PerdureError):
    """No run has this id."""

    code = "RUN_NOT_FOUND"
    http_status = 404


class RunNotActive(PerdureError):
    """The run is unknown or already terminal, so it cannot take a signal."""

    code = "RUN_NOT_ACTIVE"
    http_status = 410


class ScheduleNotFound(PerdureError):
    """No schedule has this name (R25)."""

    code = "SCHEDULE_NOT_FOUND"
    http_status = 404


class BatchNotFound(PerdureError):
    """No batch has this id (R24)."""

    code = "BATCH_NOT_FOUND"
    http_status = 404


class InvalidTransition(PerdureError):
    """A status change the lifecycle (R1) does not allow."""

    code = "INVALID_TRANSITION"
    http_status = 409


class NotWaiting(PerdureError):
    """A signal for a key the run neither waits on nor expects."""

    code = "NOT_WAITING"
    http_status = 409


class SignalConflict(PerdureError):
    """A second, different signal for a key that already has one."""

    code = "SIGNAL_CONFLICT"
    http_status = 409


class InvalidSignal(PerdureError):
    """A malformed signal, or a payload failing the wait's schema."""

    code = "INVALID_SIGNAL"
    http_status = 400


class PermissionDenied(PerdureError):
    """The approver is not on the wait's allow-list."""

    code = "PERMISSION_DENIED"
    http_status = 403


class UnknownTarget(PerdureError):
    """No definition is registered for this target."""

    code = "UNKNOWN_TARGET"
    http_status = 404


class InvalidInput(PerdureError):
    """Arguments that fail validation; nothing was stored."""

    code = "INVALID_INPUT"
    http_status = 400


class IdempotencyConflict(InvalidInput):
    """An idempotency key or run id reused for a different target, owner or input."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class SerializationError(PerdureError):
    """A value that msgspec cannot encode (results and inputs must be plain data)."""

    code = "SERIALIZATION_ERROR"
    http_status = 400


class NonDeterminismError(PerdureError):
    """Replay asked for a different step than the journal recorded (R7)."""

    code = "NON_DETERMINISM"
    http_status = 500


class StepFailed(PerdureError):
    """A step failed on its last attempt; ``detail`` names the step, cause and attempts."""

    code = "STEP_FAILED"
    http_status = 500


class WaitExpired(PerdureError):
    """A wait's deadline passed before its signal arrived (R11)."""

    code = "WAIT_EXPIRED"
    http_status = 408


class InvalidOutput(PerdureError):
    """A task's result fails its declared ``output_schema`` (R24): the job fails."""

    code = "INVALID_OUTPUT"
    http_status = 500


class ChildFailed(PerdureError):
    """A child run ended ``failed``; ``detail`` holds its error."""

    code = "CHILD_FAILED"
    http_status = 500


class ChildCancelled(PerdureError):
    """A child run ended ``cancelled``."""

    code = "CHILD_CANCELLED"
    http_status = 500


class StorageError(PerdureError):
    """The data directory cannot be used; nothing was modified."""

    code = "STORAGE_ERROR"
    http_status = 500


class DirectoryLocked(StorageError):
    """Another process owns the data directory for writing (R27)."""

    code = "DIRECTORY_LOCKED"
    http_status = 409


class ForeignDirectory(StorageError):
    """The directory holds something that is not a perdure store (R28)."""

    code = "FOREIGN_DIRECTORY"


class CorruptStore(StorageError):
    """The LMDB files are damaged or unreadable (R28)."""

    code = "CORRUPT_STORE"


class StorageUnavailable(StorageError):
    """The directory or its files cannot be used as they are: permissions, a read-only
    file system, a path too long or holding NUL, a symlink or a non-regular file where a
    store file belongs. Nothing was modified; fix the path or its permissions."""

    code = "STORAGE_UNAVAILABLE"
    http_status = 503


class StorageFull(StorageError):
    """The disk (or the file system's quota) is full: the write was not made (R32)."""

    code = "STORAGE_FULL"
    http_status = 507


class SchemaTooNew(StorageError):
    """The store was written by a newer perdure schema than this one reads (R28)."""

    code = "SCHEMA_TOO_NEW"


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group, however deeply nested (``[exc]`` for
    one that is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
