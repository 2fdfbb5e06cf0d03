"""A new SQLite tracking store made whole: MLflow creates the schema of a ``sqlite:///`` store in the
file itself (tables, then its migrations one by one) without a lock, so two processes that open a
missing store at once (two hunts sharing one ``--tracking-uri``, a report or ``mlflow ui`` opening
``OUT/mlflow.db`` while its hunt starts) fail: tables made twice, or a migration found half done."""

from __future__ import annotations

from pathlib import Path

from study.record.files import create_whole


def create_store(tracking_uri: str) -> None:
    """Make the SQLite store of ``tracking_uri`` whole if it is missing (a temporary file beside it,
    migrated by MLflow, then linked into place); other stores, and one that exists, are left alone."""
    if not tracking_uri.startswith("sqlite:///"):
        return

    def build(temporary: Path) -> None:
        from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        # the default artifact root MLflow's client gives a local store (experiment 0 keeps it)
        store = SqlAlchemyStore(f"sqlite:///{temporary}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()

    create_whole(Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]), build)
