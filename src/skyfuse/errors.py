"""Typed errors. Every user-facing failure is one of these, so the CLI can print one line, not a traceback."""

from __future__ import annotations


class SkyfuseError(Exception):
    """Base class: the message is a complete one-line explanation with the fix."""


class BadInputError(SkyfuseError, ValueError):
    """An input file or folder cannot be used as given."""


class ImageDecodeError(BadInputError):
    """One image could not be decoded; callers skip it and report it."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DatasetNotFoundError(SkyfuseError, FileNotFoundError):
    """A dataset is missing or incomplete; the message says how to get it by hand."""


class ChecksumError(SkyfuseError):
    """A downloaded or cached file does not match its expected checksum."""


class ConfigError(SkyfuseError, ValueError):
    """A configuration value, protocol or registry name is invalid."""


class CheckpointError(SkyfuseError):
    """A model bundle, checkpoint or cache cannot be loaded."""
