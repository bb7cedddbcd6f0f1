"""Errors a user can cause, and the exit code each one maps to.

Every error here carries a one-line message that names the fix. They are
raised anywhere below the CLI and caught once, in ``cli``, where they become
the process exit code with no traceback. Exit codes are distinct per cause so
that systemd, Kubernetes and shell scripts can tell them apart.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes. Documented in the README; never renumber one."""

    OK = 0
    INTERNAL = 1
    USAGE = 2  # click's own code for a malformed command line
    CONFIG = 3
    APP_IMPORT = 4
    BIND = 5
    BUDGET_EXHAUSTED = 6  # a slot ran out of restarts under --on-exhausted exit
    ALL_EXHAUSTED = 7  # every slot ran out of restarts after serving traffic
    BOOT_LOOP = 8  # every slot ran out of restarts and no worker ever became ready
    WORKER_HUNG = 9  # a thread worker hung under --on-hung-thread exit
    RELOAD_DIR = 10  # a --reload-dir does not exist or is not a directory
    STATUS_UNAUTHORIZED = 11  # corral status: the side port refused its credentials


class CorralError(Exception):
    """Base for every error a user can cause; ``str(err)`` is the one-line message."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(CorralError):
    """A setting is invalid, unknown or inconsistent with another."""

    exit_code = ExitCode.CONFIG


class AppImportError(CorralError):
    """The app path does not import, or names nothing callable.

    ``traceback`` holds the user's own frames of what the import raised
    (corral's and importlib's left out), or "" when there is nothing to show;
    the CLI prints it above the one-line message.
    """

    exit_code = ExitCode.APP_IMPORT

    def __init__(self, message: str, *, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class BindError(CorralError):
    """A listening socket could not be created (port in use, no permission...)."""

    exit_code = ExitCode.BIND


class ReloadDirError(CorralError):
    """A directory ``--reload`` should watch does not exist."""

    exit_code = ExitCode.RELOAD_DIR
