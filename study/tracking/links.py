"""Links into the MLflow UI: the runs table of an experiment, filtered to the counterexamples.

MLflow 3.17's UI routes ``#/experiments/<id>/runs`` to the training-runs table (the bare experiment page
opens a GenAI overview in a fresh browser profile) and reads ``searchFilter``, ``orderByKey`` and
``orderByAsc`` from the query string after the hash. With a filter and the default order (start time)
the table nests matching child runs, folded, under their parents; ordered by another key it lists the
matching runs flat, so the link orders by loss.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from mlflow.tracking import MlflowClient

from study.diagnostics.verify import VERDICT_TAG

DEFAULT_UI = "http://127.0.0.1:5000"

# The runs a reviewer opens first: re-verified counterexamples (verdict confirmed or
# contradiction_candidate, study.diagnostics.verify; runs without the tag do not match `!=`), and
# certified spurious minima in a hunt that did not re-verify.
VERIFIED_FILTER = f"tags.{VERDICT_TAG} != 'rejected'"
COUNTEREXAMPLE_FILTER = "tags.critical_point = 'spurious_minimum' and tags.certified = 'true'"


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def ui_base(tracking_uri: str, *, port: int = 5000) -> str:
    """Where the UI answers: the tracking server itself, else a local ``mlflow ui`` on ``port``."""
    if is_server(tracking_uri):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{port}"


def ui_command(tracking_uri: str, *, port: int = 5000) -> str | None:
    """The command that serves a local store's UI on the loopback (None for a tracking server)."""
    if is_server(tracking_uri):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {port}"


def runs_link(
    base: str,
    experiment_id: str,
    filter_string: str = COUNTEREXAMPLE_FILTER,
    *,
    order_by: str = "metrics.`loss`",
    ascending: bool = True,
) -> str:
    """A URL that opens the experiment's runs table with ``filter_string`` applied, flat, sorted."""
    query = urlencode(
        {
            "searchFilter": filter_string,
            "orderByKey": order_by,
            "orderByAsc": "true" if ascending else "false",
        },
        quote_via=quote,
    )
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def counterexamples_link(tracking_uri: str, experiment: str, *, port: int = 5000) -> str | None:
    """The link to an experiment's re-verified counterexamples (its certified spurious minima when none
    was re-verified), or None when the experiment does not exist."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    verified = client.search_runs([found.experiment_id], f"tags.{VERDICT_TAG} LIKE '%'", max_results=1)
    filter_string = VERIFIED_FILTER if verified else COUNTEREXAMPLE_FILTER
    return runs_link(ui_base(tracking_uri, port=port), found.experiment_id, filter_string)
