"""The library's error hierarchy.

Orchestration decides what to do from the class alone: a config or contract error and a gate
failure are never retried, a transient error is retried with backoff, and bad input is normally
counted and skipped row by row (the exception is raised only when a whole file is unreadable).
"""

from __future__ import annotations


class CurationError(Exception):
    """Base of every error the library raises on purpose."""

    retryable = False


class ConfigError(CurationError):
    """The config or a stage contract is wrong: fix the config, rerunning will not help."""


class BadInputError(CurationError):
    """An input file cannot be read at all. The message names the file."""


class TransientError(CurationError):
    """Storage or network hiccup (throttling, connection reset): retry with backoff."""

    retryable = True


class GateFailure(CurationError):
    """A critical validation check failed: the build must not be published."""

    def __init__(self, message: str, report_uri: str | None = None, failed: list[str] | None = None):
        super().__init__(message)
        self.report_uri = report_uri
        self.failed = failed or []
