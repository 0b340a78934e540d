"""On-call plumbing of the gate against real loopback servers: webhook (http.server), e-mail
(an SMTP sink speaking to smtplib), StatsD (a UDP socket), OpenTelemetry (the SDK's in-memory
reader) and the Airflow notifier."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest

from curation import layout, storage
from curation.config import MetricsConfig
from curation.errors import GateFailure
from curation.gates import GateReport
from curation.metrics import emit_gate_metrics, gate_gauges
from curation.notify import EmailNotifier, GateEvent, LogNotifier, WebhookNotifier, send
from curation.pipeline import run_build

ROOT = Path(__file__).resolve().parent.parent
TOXIC = {"heuristics": {"toxic_words": ["the", "and", "of"]}}


class _Webhook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
        if self.server.delay:
            time.sleep(self.server.delay)
        self.send_response(self.server.status)
        self.end_headers()

    def log_message(self, *args):
        pass


class _SmtpSink(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self):
        self.wfile.write(b"220 sink ready\r\n")
        envelope, lines, in_data = [], [], False
        while line := self.rfile.readline():
            if in_data:
                if line in (b".\r\n", b".\n"):
                    self.server.messages.append(
                        {"rcpt": envelope, "message": email.message_from_bytes(b"".join(lines), policy=email.policy.default)}
                    )
                    in_data, lines = False, []
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == b"RCPT":
                envelope.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                self.wfile.write(b"250 ok\r\n")
            elif verb in (b"HELO", b"MAIL", b"RSET", b"NOOP"):
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"DATA":
                in_data = True
                self.wfile.write(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"502 not implemented\r\n")


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def webhook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received, server.delay, server.status = [], 0.0, 200
    yield _serve(server)
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpSink)
    server.daemon_threads = True
    server.messages = []
    yield _serve(server)
    server.shutdown()
    server.server_close()


@pytest.fixture
def statsd():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def _datagrams(sock: socket.socket, count: int) -> list[str]:
    return [sock.recvfrom(65535)[0].decode() for _ in range(count)]


def test_failed_gate_notifies_webhook_and_email_and_sends_statsd_gauges(build_config, webhook, smtp, statsd):
    notify = {
        "webhook_url": f"http://127.0.0.1:{webhook.server_port}/hooks/oncall",
        "email_to": ["oncall@example.com", "data@example.com"],
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.server_address[1],
    }
    metrics = {"statsd_host": "127.0.0.1", "statsd_port": statsd.getsockname()[1], "otel": False}
    cfg = build_config(build_id="toxic", publish={"enabled": False}, gate={"notify": notify, "metrics": metrics}, **TOXIC)
    with pytest.raises(GateFailure) as failure:
        run_build(cfg)
    report = GateReport.from_dict(storage.read_json(layout.gate_report_uri(cfg, "toxic")))
    failed = {c.name for c in report.failed("critical")}
    assert "toxicity rate" in failed

    (hook,) = webhook.received
    assert hook["path"] == "/hooks/oncall" and hook["type"] == "application/json"
    event = hook["body"]["event"]
    assert event["status"] == "failed" and event["build_id"] == "toxic" and event["html_uri"] == report.html_uri
    assert {c["name"] for c in event["failed_checks"] if c["severity"] == "critical"} == failed
    assert hook["body"]["text"].startswith("[web-en] gate FAILED for toxic") and "toxicity rate" in hook["body"]["text"]

    (mail,) = smtp.messages
    assert mail["rcpt"] == ["oncall@example.com", "data@example.com"]
    assert str(mail["message"]["Subject"]).strip().startswith("[web-en] gate FAILED for toxic")  # unfolded
    body = mail["message"].get_content().replace("\r\n", "\n")
    assert "[critical] toxicity rate: observed" in body and f"html: {report.html_uri}" in body
    assert body.strip() == str(failure.value).strip()

    gauges = dict(line.split("|", 1)[0].rsplit(":", 1) for line in _datagrams(statsd, len(gate_gauges(report))))
    assert gauges["curation.gate.passed"] == "0" and gauges["curation.gate.publishable"] == "0"
    assert int(gauges["curation.gate.critical_failures"]) == len(failed) and gauges["curation.gate.kept_rows"] == "0"
    assert float(gauges["curation.gate.toxicity_rate"]) == pytest.approx(report.metrics["toxicity_rate"], rel=1e-5)


def test_statsd_datagrams_carry_tags_per_stage(build_config, statsd):
    metrics = {"statsd_host": "127.0.0.1", "statsd_port": statsd.getsockname()[1], "otel": False}
    cfg = build_config(build_id="ok", publish={"enabled": False}, gate={"metrics": metrics})
    run_build(cfg)
    report = GateReport.from_dict(storage.read_json(layout.gate_report_uri(cfg, "ok")))
    lines = _datagrams(statsd, len(gate_gauges(report)))
    assert "curation.gate.passed:1|g|#corpus:web-en" in lines
    ratios = {line.split("#", 1)[1]: float(line.split(":", 1)[1].split("|")[0]) for line in lines if ".kept_ratio:" in line}
    assert ratios == pytest.approx({f"corpus:web-en,stage:{k}": v for k, v in report.metrics["stage_kept_ratio"].items()})


def test_opentelemetry_gauges_reach_the_meter_provider(build_config):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    cfg = build_config(build_id="otel", publish={"enabled": False})
    run_build(cfg)
    report = GateReport.from_dict(storage.read_json(layout.gate_report_uri(cfg, "otel")))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    emit_gate_metrics(report, MetricsConfig(otel=True), meter_provider=provider)
    points = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points[(metric.name, tuple(sorted(point.attributes.items())))] = point.value
    assert points[("curation.gate.passed", (("corpus", "web-en"),))] == 1
    assert points[("curation.gate.kept_rows", (("corpus", "web-en"),))] == report.rows > 100
    filter_ratio = report.metrics["stage_kept_ratio"]["filter"]
    assert points[("curation.gate.kept_ratio", (("corpus", "web-en"), ("stage", "filter")))] == pytest.approx(filter_ratio)
    provider.shutdown()


@pytest.fixture(scope="module")
def failed_event(tmp_path_factory, sample_crawl) -> GateEvent:
    """The event of a real failed gate (toxic lexicon), for the channel-level tests."""
    from curation.config import load_config

    root = tmp_path_factory.mktemp("event")
    cfg = load_config(
        overrides={
            "build_id": "toxic",
            "inputs": sample_crawl,
            "work_root": str(root / "work"),
            "release_root": str(root / "releases"),
            "state_root": str(root / "state"),
            "publish": {"enabled": False},
            "gate": {"documents_suite": str(ROOT / "expectations" / "documents.json"), "notify": {"log": False}},
            **TOXIC,
        }
    )
    with pytest.raises(GateFailure):
        run_build(cfg)
    return GateEvent.from_report(GateReport.from_dict(storage.read_json(layout.gate_report_uri(cfg, "toxic"))))


def test_webhook_errors_and_timeouts_are_reported_not_raised(webhook, failed_event, caplog):
    url = f"http://127.0.0.1:{webhook.server_port}/secret-token-path"
    webhook.status = 500
    assert send(failed_event, [WebhookNotifier(url)]) == {
        "webhook": f"error: webhook http://127.0.0.1:{webhook.server_port}/... answered HTTP 500"
    }
    webhook.status, webhook.delay = 200, 2.0
    result = send(failed_event, [WebhookNotifier(url, timeout_s=0.3)])
    assert result["webhook"].startswith("error: webhook") and "within 0.3s" in result["webhook"]
    assert "secret-token-path" not in caplog.text  # webhook paths carry tokens: never logged


def test_email_to_an_unreachable_relay_fails_cleanly_and_log_notifier_logs(failed_event, caplog):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = send(failed_event, [EmailNotifier("127.0.0.1", ["oncall@example.com"], port=port, timeout_s=2), LogNotifier()])
    assert results["email"].startswith(f"error: e-mail via 127.0.0.1:{port} failed") and results["log"] == "sent"
    logged = [r for r in caplog.records if r.name == "curation.notify" and r.levelno == logging.ERROR]
    assert any("[critical] toxicity rate" in r.getMessage() for r in logged)


def test_warnings_notify_and_never_raise(build_config, webhook):
    # A domain band nobody meets: a warning-only failure publishes and still alerts.
    notify = {"webhook_url": f"http://127.0.0.1:{webhook.server_port}/hook", "log": False}
    cfg = build_config(build_id="warn", publish={"enabled": False}, gate={"domain_kept_ratio": {"min": 0.99}, "notify": notify})
    summary = run_build(cfg)
    report = GateReport.from_dict(storage.read_json(summary["gate_report"]))
    assert report.passed and [c.kind for c in report.failed()] == ["band.domain_kept_ratio"]
    (hook,) = webhook.received
    assert hook["body"]["event"]["status"] == "warning"


@pytest.mark.slow
def test_airflow_notifier_sends_the_gate_report_of_a_failed_task(build_config, webhook):
    from airflow.sdk.exceptions import AirflowFailException

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from notifiers import GateNotifier
    finally:
        sys.path.remove(str(ROOT / "dags"))

    # In Airflow the gate task notifies through the callback, not from the library.
    notify = {"enabled": False, "log": False, "webhook_url": f"http://127.0.0.1:{webhook.server_port}/airflow"}
    cfg = build_config(build_id="af", publish={"enabled": False}, gate={"notify": notify}, **TOXIC)
    with pytest.raises(GateFailure) as failure:
        run_build(cfg)
    assert webhook.received == []  # gate.notify.enabled is off: the library stayed quiet
    try:
        raise AirflowFailException(str(failure.value)) from failure.value  # what the DAG's gate task raises
    except AirflowFailException as exc:
        wrapped = exc
    GateNotifier(config_uri=layout.config_uri(cfg, "af"))({"exception": wrapped})
    (hook,) = webhook.received
    assert hook["path"] == "/airflow" and hook["body"]["event"]["status"] == "failed"
    assert hook["body"]["event"]["report_uri"] == layout.gate_report_uri(cfg, "af")
    assert "toxicity rate" in {c["name"] for c in hook["body"]["event"]["failed_checks"]}
