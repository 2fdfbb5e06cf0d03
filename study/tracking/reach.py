"""Is the server behind a storage or tracking URL there? Asked once, with a short timeout, before a hunt
writes anything: MLflow's HTTP client retries an absent server for minutes, and a database driver waits
for the operating system's TCP timeout."""

from __future__ import annotations

import importlib.metadata
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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


TRACKING_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc")  # besides databases
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's database stores


class StoreURLError(UsageError):
    """A storage, tracking or artifact URL that cannot be opened as given (one line for the user)."""


def check_store_url(url: str | None, flag: str, *, kind: str) -> None:
    """Raise :class:`StoreURLError` unless ``url`` names a store of ``kind`` that this process can open,
    asked without opening it (nothing is written): ``storage`` (Optuna): ``journal://PATH`` or a
    SQLAlchemy URL whose dialect and driver are installed; ``tracking`` (MLflow): a path, ``file:``,
    ``http(s):``, databricks, a database as for ``storage``, or a scheme an installed plugin registers.
    ``flag`` names the option in the message, e.g. ``--tracking-uri``."""
    if not url:
        return
    shown = _without_password(url)
    if kind == "storage":
        if not url.startswith("journal://"):
            _check_database(url, flag, shown)
        return
    scheme = url.split(":", 1)[0].lower() if "://" in url or url.startswith("file:") else ""
    if scheme.split("+", 1)[0] in DATABASES:
        _check_database(url, flag, shown)
        return
    plugins = {e.name for e in importlib.metadata.entry_points(group="mlflow.tracking_store")}
    if scheme not in TRACKING_SCHEMES and scheme not in plugins:
        known = ", ".join(f"{s}:" for s in (*TRACKING_SCHEMES[1:4], *DATABASES, *sorted(plugins)))
        raise StoreURLError(f"{flag}: MLflow has no store for {shown!r}; it opens a path, {known}")


def _check_database(url: str, flag: str, shown: str) -> None:
    import sqlalchemy

    try:
        dialect = sqlalchemy.engine.make_url(url).get_dialect()
        dialect.import_dbapi()
    except sqlalchemy.exc.NoSuchModuleError:  # a subclass of ArgumentError: first
        scheme = url.split(":", 1)[0]
        raise StoreURLError(f"{flag}: no database dialect {scheme!r} for {shown!r}") from None
    except sqlalchemy.exc.ArgumentError:
        raise StoreURLError(f"{flag}: {shown!r} is not a database URL (dialect://user@host/db)") from None
    except ImportError as exc:
        raise StoreURLError(f"{flag}: no database driver for {shown!r}: {exc}") from None


def check_artifact_location(location: str, tracking_uri: str, flag: str) -> None:
    """Raise :class:`StoreURLError` unless MLflow can write artifacts to ``location`` (an experiment's
    artifact location): a scheme it knows, and for a local folder one this process may create or write."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(location, tracking_uri=tracking_uri)
    except MlflowException as exc:
        first = str(exc).strip().split(". ")[0]
        raise StoreURLError(f"{flag}: its experiment keeps artifacts at {location!r}: {first}") from None
    if location.startswith("file:") or "://" not in location:
        path = Path(urllib.parse.urlparse(location).path if location.startswith("file:") else location)
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
            raise StoreURLError(f"{flag}: its experiment's artifact folder {path} cannot be written")


def existing_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """The artifact location of ``experiment`` where the tracking store already holds it, asked of a
    store that exists (a SQLite file that is there, or a server); None otherwise. Creates nothing."""
    sqlite = tracking_uri.startswith("sqlite:///")
    if sqlite and not Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]).is_file():
        return None
    if not (sqlite or is_server(tracking_uri)):
        return None
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    return None if found is None else str(found.artifact_location)
