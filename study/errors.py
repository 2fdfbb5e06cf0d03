"""Errors shown to users as one line with exit code 2."""


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""
