"""Errors shown to users as one line with exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class PipelineError(ValueError):
    """A pipeline file that does not validate; the message names the file and the field."""
