"""Is the server behind a storage or tracking URL there? Asked once, with a short timeout, before a hunt
writes anything: MLflow's HTTP client retries an absent server for minutes, and a database driver waits
for the operating system's TCP timeout."""

from __future__ import annotations

import urllib.error
import urllib.request

from study.errors import UsageError

TIMEOUT_SECONDS = 5.0
SERVERS = ("http", "https", "postgresql", "postgres", "mysql", "mssql", "oracle")


class UnreachableStoreError(UsageError):
    """A storage or tracking server that does not answer (one line for the user)."""


def is_server(url: str | None) -> bool:
    """Whether ``url`` names a tracking server (HTTP) rather than a database or files."""
    return bool(url) and str(url).split(":", 1)[0].lower() in ("http", "https")


def check_reachable(url: str | None, what: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
    """Raise :class:`UnreachableStoreError` unless the server behind ``url`` answers within ``timeout``
    seconds. Files (SQLite, journal, ``file:``) and ``None`` (the hunt's own files) pass unchecked.
    ``what`` names the flag in the message, e.g. ``--tracking-uri``."""
    if not url:
        return
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in SERVERS:
        return
    shown = _without_password(url)
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout):
                return
        except urllib.error.HTTPError:
            return  # something answered (a proxy, an older server without /health): let MLflow talk to it
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UnreachableStoreError(
                f"{what}: no answer from {shown} within {timeout:g} s ({reason})"
            ) from None
    import sqlalchemy

    connect_args = {"connect_timeout": max(1, round(timeout))} if scheme != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as exc:
        raise UnreachableStoreError(f"{what}: no database driver for {shown}: {exc}") from None
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        lines = [line.strip() for line in str(getattr(exc, "orig", exc)).splitlines() if line.strip()]
        first = lines[0] if lines else type(exc).__name__
        raise UnreachableStoreError(f"{what}: cannot connect to {shown}: {first}") from None


def _without_password(url: str) -> str:
    """``scheme://user:***@host/...`` (passwords stay out of messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    credentials, _, host = rest.partition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
