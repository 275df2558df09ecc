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
    """The run was asked to stop (SIGTERM, or SIGUSR1 that Slurm sends before the time
    limit) and stopped cleanly: its checkpoint is written, so running it again with resume
    on continues where it stopped. Exit code 143 (128 + SIGTERM), what schedulers expect of
    a process that ended on SIGTERM; a sweep resumes the point instead of failing it."""

    exit_code = 143
