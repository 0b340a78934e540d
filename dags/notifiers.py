"""Airflow notifiers for on-call: a gate outcome through Airflow's notifier interface.

`GateNotifier` is a `BaseNotifier`, so it plugs into any callback::

    @task(retries=0, on_failure_callback=GateNotifier())
    def gate(...): ...

On a failed gate task it reads the build's gate report (named by the GateFailure, else found
from the build's config) and sends the event through the channels of the build's
``gate.notify`` config (log, webhook, e-mail; see `curation.notify`). If the task failed before
any report existed, it still sends a "failed" event with the task's error. Set
``gate.notify.enabled: false`` in the build config when this notifier is attached, so the gate
task does not notify twice.

No DAG is defined here and nothing heavy is imported at module level: `curation` is imported
inside `notify`, which runs in the worker that ran the task.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

PREPARE_CONFIG_URI = "{{ ti.xcom_pull(task_ids='prepare')['config_uri'] }}"


class GateNotifier(BaseNotifier):
    """Send the gate outcome of a run. `config_uri` (templated) defaults to the config `prepare` wrote."""

    template_fields = ("config_uri", "report_uri")

    def __init__(self, config_uri: str = PREPARE_CONFIG_URI, report_uri: str | None = None):
        super().__init__()
        self.config_uri = config_uri
        self.report_uri = report_uri

    def notify(self, context: Any) -> None:
        from curation import layout, storage
        from curation.gates import GateReport
        from curation.notify import GateEvent, notifiers_from_config, send
        from curation.pipeline import load_build_config

        cfg = load_build_config(self.config_uri)
        build_id = cfg.resolved_build_id()
        error = context.get("exception")
        report_uri = self.report_uri or _report_uri_of(error) or layout.gate_report_uri(cfg, build_id)
        if storage.exists(report_uri):
            event = GateEvent.from_report(GateReport.from_dict(storage.read_json(report_uri)))
        else:
            ti = context.get("ti")
            task = getattr(ti, "task_id", "a task")
            event = GateEvent(
                status="failed",
                build_id=build_id,
                corpus=cfg.publish.corpus,
                summary=f"[{cfg.publish.corpus}] build {build_id} failed in {task} before its gate report was written",
                message=f"{type(error).__name__}: {error}" if error else "no error recorded",
                report_uri="",
                html_uri="",
            )
        results = send(event, notifiers_from_config(cfg.gate.notify))
        self.log.info("gate notification for %s (%s): %s", build_id, event.status, results)


def _report_uri_of(error: BaseException | None) -> str | None:
    """The gate report a GateFailure names, also when wrapped (AirflowFailException from GateFailure)."""
    while error is not None:
        uri = getattr(error, "report_uri", None)
        if uri:
            return uri
        error = error.__cause__ or error.__context__
    return None
