"""A hunt folder belongs to one hunt: where it may be written, which resolved pipeline it holds, and
that one driver at a time writes it. Every refusal is a :class:`HuntInputError` naming the problem,
raised before anything is written."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from study.record import write_json
from study.search.hunt_study import OFFSET, SEQUENCE
from study.spec import HuntSpec

IDENTITY_FILE = "hunt_identity.json"
LOCK_FILE = ".hunt.lock"
# settings that change how a hunt is scheduled, not what its runs are: free to change on resume (the
# HuntSpec fields marked with study.spec.SCHEDULING)
SCHEDULING = tuple(f.name for f in dataclasses.fields(HuntSpec) if f.metadata.get("scheduling"))
SEEDS_KEY = "seeds"  # the identity's seed scheme (study.search.hunt_study.trial_seeds); absent: offset


class HuntInputError(ValueError):
    """A hunt that must not start (one line for the user, exit status 2)."""


def resolved_pipeline(spec: HuntSpec) -> dict[str, Any]:
    """The pipeline as the hunt runs it, flattened to ``field.sub: value`` (scheduling fields left out)."""
    raw = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", {k: v for k, v in raw.items() if k not in SCHEDULING})
    return flat


def pipeline_hash(spec: HuntSpec) -> str:
    text = json.dumps(resolved_pipeline(spec), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def scheduling_key(key: str) -> bool:
    """Whether a flattened field (``resources.gpus_per_chunk``) is a scheduling setting."""
    return key.split(".", 1)[0] in SCHEDULING


def check_same_pipeline(spec: HuntSpec, stored: dict[str, Any] | None, where: str) -> None:
    """Refuse to resume a hunt whose resolved pipeline differs from ``spec`` (scheduling fields aside:
    identities written before ``resources`` counted as scheduling still hold it)."""
    if not stored:
        return
    new = resolved_pipeline(spec)
    if stored.get("hash") == pipeline_hash(spec):
        return
    old = {k: v for k, v in stored.get("resolved", {}).items() if not scheduling_key(k)}
    fields = differing(old, new)
    if not fields and "resolved" in stored:
        return
    shown = ", ".join(fields[:6]) + (" ..." if len(fields) > 6 else "")
    raise HuntInputError(
        f"{where} holds hunt {stored.get('name')!r} with a different pipeline (differs in: {shown}); "
        f"to start a new hunt, give it another name or another --out"
    )


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return None


def check_locations(out: Path, storage: str | None, tracking_uri: str | None) -> None:
    """``--out`` is a folder (or can be made one); storages' folders exist and their files are writable."""
    if out.exists() and not out.is_dir():
        raise HuntInputError(f"--out: {out} is a file, not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HuntInputError(f"--out: {parent} is a file, not a folder")
            break
    checks = [("--storage", storage), ("--tracking-uri", tracking_uri)]
    checks += [("--out", f"sqlite:///{out / 'mlflow.db'}"), ("--out", f"sqlite:///{out / 'optuna.db'}")]
    for flag, uri in checks:
        if not uri:
            continue
        path = Path(uri[len("journal://") :]) if uri.startswith("journal://") else _sqlite_path(uri)
        if path is None:
            continue
        if flag != "--out" and not path.parent.is_dir():
            raise HuntInputError(f"{flag}: folder {path.parent} does not exist (it is not created)")
        if path.exists() and not os.access(path, os.W_OK):
            raise HuntInputError(f"{flag}: {path} is read-only")


def check_folder(spec: HuntSpec, out: Path) -> dict[str, Any] | None:
    """The folder holds this hunt (or none): same name and same resolved pipeline. Returns the folder's
    identity (None for a new folder)."""
    path = out / IDENTITY_FILE
    if not path.is_file():
        if (out / "trials").is_dir() and any((out / "trials").glob("trial-*.csv")):
            raise HuntInputError(f"--out: {out} holds runs of an unknown hunt; use another --out")
        return None
    stored: dict[str, Any] = json.loads(path.read_text())
    if stored.get("name") != spec.name:
        raise HuntInputError(
            f"--out: {out} holds hunt {stored.get('name')!r}, not {spec.name!r}; give each hunt its own --out"
        )
    check_same_pipeline(spec, stored, f"--out {out}")
    return stored


def seed_scheme(study_identity: dict[str, Any] | None, folder_identity: dict[str, Any] | None) -> str:
    """The seed scheme a hunt runs with: the one it began with. The study's identity (it numbers the
    trials) decides, else the folder's; one without the marker was begun before there was a choice
    (offset); a new hunt takes the sequence."""
    for identity in (study_identity, folder_identity):
        if identity:
            return str(identity.get(SEEDS_KEY, OFFSET))
    return SEQUENCE


def write_identity(spec: HuntSpec, out: Path, *, seeds: str = SEQUENCE) -> dict[str, Any]:
    identity = {
        "name": spec.name,
        "hash": pipeline_hash(spec),
        "resolved": resolved_pipeline(spec),
        SEEDS_KEY: seeds,
    }
    write_json(identity, out / IDENTITY_FILE)
    return identity


def hunt_running(out: Path) -> bool:
    """Whether a driver holds ``out/.hunt.lock`` now (asked without taking it for longer than a moment)."""
    path = out / LOCK_FILE
    if not path.is_file():
        return False
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextmanager
def hunt_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.hunt.lock`` while a driver runs; a second driver on the same folder is refused."""
    path = out / LOCK_FILE
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HuntInputError(f"--out: another driver is running a hunt in {out}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
