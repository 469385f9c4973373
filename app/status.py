"""Statuses of background work, shared by fine-tuning jobs and evaluations.

    validating_files -> queued -> running -> succeeded | failed | cancelled

Only fine-tuning jobs validate files first or get cancelled; an evaluation goes
queued -> running -> succeeded | failed. Stored as the plain strings (the API reports them).
"""

from enum import StrEnum


class Status(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (Status.VALIDATING_FILES, Status.QUEUED, Status.RUNNING)
TERMINAL = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
