"""Gate gauges for dashboards and alerts: StatsD over UDP and OpenTelemetry.

Every gate run sets these gauges (tag/attribute ``corpus``; kept ratios also ``stage``):

    curation.gate.passed            1 if no critical check failed, else 0
    curation.gate.publishable       1 if passed or overridden with a reason
    curation.gate.overridden        1 if an override made a failed build publishable
    curation.gate.critical_failures number of failed critical checks
    curation.gate.warnings          number of failed warning checks
    curation.gate.kept_rows         documents that passed every stage
    curation.gate.kept_ratio        rows_out / rows_in, per stage
    curation.gate.dedup_ratio       share of extracted documents removed as duplicates
    curation.gate.toxicity_rate     share of extracted documents removed as toxic

StatsD: plain UDP datagrams in the DogStatsD dialect (``name:value|g|#tag:value``), which the
Datadog agent, Telegraf and statsd_exporter all accept; sending never blocks and never raises.
OpenTelemetry: synchronous gauges on the global MeterProvider (a no-op until the process installs
one, e.g. an OTLP exporter), or on the provider passed in.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from curation.config import MetricsConfig

if TYPE_CHECKING:
    from curation.gates import GateReport

log = logging.getLogger(__name__)

Gauge = tuple[str, float, dict[str, str]]


def gate_gauges(report: GateReport) -> list[Gauge]:
    """The gauges of one gate run: (name without prefix, value, tags)."""
    tags = {"corpus": report.corpus or "unknown"}
    metrics = report.metrics or {}
    out: list[Gauge] = [
        ("gate.passed", float(report.passed), tags),
        ("gate.publishable", float(report.publishable), tags),
        ("gate.overridden", float(bool(report.override)), tags),
        ("gate.critical_failures", float(len(report.failed("critical"))), tags),
        ("gate.warnings", float(len(report.failed("warning"))), tags),
        ("gate.kept_rows", float(report.rows), tags),
    ]
    for stage, ratio in (metrics.get("stage_kept_ratio") or {}).items():
        if ratio is not None:
            out.append(("gate.kept_ratio", float(ratio), {**tags, "stage": stage}))
    for key in ("dedup_ratio", "toxicity_rate"):
        if metrics.get(key) is not None:
            out.append((f"gate.{key}", float(metrics[key]), tags))
    return out


class StatsdClient:
    """A minimal StatsD gauge sender over UDP (fire and forget)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8125, prefix: str = "curation"):
        self.address = (host, port)
        self.prefix = prefix.rstrip(".")
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def gauge(self, name: str, value: float, tags: dict[str, str] | None = None) -> None:
        line = f"{self.prefix}.{name}:{value:g}|g"
        if tags:
            line += "|#" + ",".join(f"{_clean(k)}:{_clean(v)}" for k, v in sorted(tags.items()))
        try:
            self._socket.sendto(line.encode(), self.address)
        except OSError as exc:  # metrics are best effort: a missing agent must not fail a build
            log.debug("statsd send to %s failed: %s", self.address, exc)

    def close(self) -> None:
        self._socket.close()


def _clean(text: str) -> str:
    # StatsD delimiters inside a tag would corrupt the datagram.
    return "".join("_" if ch in "|:,#@ \n" else ch for ch in str(text))


_otel_gauges: dict[tuple[int, str], Any] = {}


def emit_otel(gauges: list[Gauge], prefix: str = "curation", meter_provider: Any = None) -> None:
    """Set each gauge on an OpenTelemetry synchronous Gauge (instruments created once per provider)."""
    from opentelemetry import metrics as otel_metrics

    provider = meter_provider or otel_metrics.get_meter_provider()
    meter = provider.get_meter("curation.gates")
    for name, value, tags in gauges:
        key = (id(provider), name)
        if key not in _otel_gauges:
            _otel_gauges[key] = meter.create_gauge(f"{prefix}.{name}", description=f"curation gate: {name}")
        _otel_gauges[key].set(value, attributes=tags)


def emit_gate_metrics(report: GateReport, cfg: MetricsConfig, meter_provider: Any = None) -> list[Gauge]:
    """Send the gate's gauges where `cfg` says; returns them. Never raises."""
    gauges = gate_gauges(report)
    if cfg.statsd_host:
        client = StatsdClient(cfg.statsd_host, cfg.statsd_port, cfg.prefix)
        try:
            for name, value, tags in gauges:
                client.gauge(name, value, tags)
        finally:
            client.close()
    if cfg.otel or meter_provider is not None:
        try:
            emit_otel(gauges, cfg.prefix, meter_provider)
        except Exception as exc:  # best effort, like StatsD
            log.warning("OpenTelemetry gauges not recorded: %s", exc)
    return gauges
