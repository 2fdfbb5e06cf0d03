"""Links into the MLflow UI: the runs table of an experiment, filtered to the counterexamples, with the
columns a reviewer compares.

What MLflow 3.17's UI reads (its JavaScript bundle, ``mlflow/server/js/build``):
* ``workflowType=machine_learning`` in the query string after the hash opens the model-training view; a
  fresh browser profile otherwise starts in the GenAI view (breadcrumb "Evaluations", a GenAI overview).
  The experiment also carries ``mlflow.experimentKind = custom_model_development``, which UIs that decide
  the view per experiment read.
* ``#/experiments/<id>/runs`` is the runs table; ``searchFilter``, ``orderByKey`` and ``orderByAsc`` set
  its filter and order. With a filter and the default order (start time) the table nests matching child
  runs, folded, under their parents; ordered by another key it lists them flat, so links order by loss.
* The counterexamples view is ordered by run name (``attributes.run_name``, a column of MLflow's runs
  table: configuration, then loss as the name prints it), not by ``metrics.`loss```: ordering by a metric
  makes MLflow's SQL left-join a subquery of ``latest_metrics``, which SQLite materializes and scans once
  per matching run (quadratic: over 10^5 runs the table did not render in minutes; by run name the same
  search takes about 1 s, docs/RESULTS.md). A reviewer can still sort by loss in the table.
* The visible columns are not URL parameters; they are part of a saved view: an experiment tag
  ``mlflow.sharedViewState.<key>`` holding ``{"name", "createdAt", "updatedAt", "state"}`` whose
  ``state`` is the JSON of the filter, the order and ``selectedColumns`` (``params.`k```,
  ``metrics.`loss```, ``tags.`verdict```), opened by ``viewStateShareKey=<key>`` (the UI ignores the
  key when the URL also names a filter or an order).
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote, urlencode

from mlflow.tracking import MlflowClient

from study.diagnostics.verify import VERDICT_TAG
from study.record import CriticalPoint, Verdict

DEFAULT_UI = "http://127.0.0.1:5000"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # the experiment kind of model training (not GenAI)
WORKFLOW = {"workflowType": "machine_learning"}  # the UI's model-training view
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COUNTEREXAMPLES_VIEW = "minima-hunt-counterexamples"  # the saved view's key
VIEW_ORDER = "attributes.run_name"  # the saved view's order (a runs column: no join, see above)
# What a reviewer compares, after the trial's own parameters (``trial.<name>``: k, n, widths, ...)
VIEW_METRICS = ("loss", "loss_gap", "lambda_min")
VIEW_TAGS = (VERDICT_TAG,)

# The runs a reviewer opens first: re-verified counterexamples (verdict confirmed or
# contradiction_candidate, study.diagnostics.verify; runs without the tag do not match `!=`), and
# certified spurious minima in a hunt that did not re-verify.
VERIFIED_FILTER = f"tags.{VERDICT_TAG} != '{Verdict.REJECTED}'"
COUNTEREXAMPLE_FILTER = (
    f"tags.critical_point = '{CriticalPoint.SPURIOUS_MINIMUM}' and tags.certified = 'true'"
)


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


def view_link(base: str, experiment_id: str, key: str) -> str:
    """A URL that opens the experiment's saved view ``key`` in the model-training view."""
    query = urlencode({"viewStateShareKey": key, **WORKFLOW}, quote_via=quote)
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def save_view(
    client: MlflowClient,
    experiment_id: str,
    key: str,
    *,
    name: str,
    filter_string: str,
    columns: list[str],
    order_by: str = "metrics.`loss`",
    ascending: bool = True,
) -> None:
    """Save (or replace) the runs-table view ``key`` of an experiment: filter, order, visible columns."""
    state = {
        "searchFilter": filter_string,
        "orderByKey": order_by,
        "orderByAsc": ascending,
        "selectedColumns": columns,
    }
    now = int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, f"{VIEW_TAG_PREFIX}{key}", json.dumps(envelope))


def view_columns(params: list[str]) -> list[str]:
    """The columns of the counterexamples view: the trial's parameters, the numbers, the verdict."""
    return (
        [f"params.`{p}`" for p in sorted(params) if p.startswith("trial.") and p != "trial.number"]
        + [f"metrics.`{m}`" for m in VIEW_METRICS]
        + [f"tags.`{t}`" for t in VIEW_TAGS]
    )


def counterexamples_link(tracking_uri: str, experiment: str, *, port: int = 5000) -> str | None:
    """Save the experiment's counterexamples view (re-verified counterexamples; its certified spurious
    minima when none was re-verified) and return the link that opens it, or None when the experiment
    does not exist."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    verified = client.search_runs([found.experiment_id], f"tags.{VERDICT_TAG} LIKE '%'", max_results=1)
    filter_string = VERIFIED_FILTER if verified else COUNTEREXAMPLE_FILTER
    # a training run's params name the trial's parameters (``trial.<name>``)
    one = client.search_runs([found.experiment_id], "params.`trial.number` LIKE '%'", max_results=1)
    save_view(
        client,
        found.experiment_id,
        COUNTEREXAMPLES_VIEW,
        name="counterexamples",
        filter_string=filter_string,
        columns=view_columns(list(one[0].data.params) if one else []),
        order_by=VIEW_ORDER,
    )
    return view_link(ui_base(tracking_uri, port=port), found.experiment_id, COUNTEREXAMPLES_VIEW)
