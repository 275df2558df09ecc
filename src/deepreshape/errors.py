"""Errors a user can cause, each printed by the CLI as one line with its exit code."""

from __future__ import annotations


class DeepReshapeError(Exception):
    """Base class; `exit_code` 2 is bad usage or input, 1 a failure at run time."""

    exit_code = 2


class UsageError(DeepReshapeError, ValueError):
    """Bad name, option, constraint or input file."""

    exit_code = 2


class DataError(UsageError):
    """A data set that is missing, corrupt, or not of the expected shape."""


class CheckpointError(UsageError):
    """A run directory or checkpoint that is missing, broken, or for another network."""


class UnsafeFileError(CheckpointError):
    """A file that asks to run code or build objects other than tensors and plain data."""


class RunFailure(DeepReshapeError, RuntimeError):
    """Something that failed while running (NaN loss, a dead peer, a timeout)."""

    exit_code = 1


class Preempted(RunFailure):
    """Stopped by SIGTERM or SIGUSR1 (a scheduler's preemption or time limit) after
    saving what a resume needs; exit 143 (128 + SIGTERM), as a killed process would, so
    schedulers and shells read it as a termination."""

    exit_code = 143
