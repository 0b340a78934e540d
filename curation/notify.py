"""Gate notifications for on-call: a small interface and three channels (log, webhook, email).

A `GateEvent` says what happened to a build's gate (failed, overridden, passed with warnings),
names every failed check with observed vs expected values and links the JSON and HTML reports.
`send` hands it to every configured notifier; a notifier that fails is logged and never hides
the gate's own outcome. Secrets never live in the config: a webhook URL with a token and SMTP
credentials are read from environment variables the config names.

The Airflow adapter (a BaseNotifier for `on_failure_callback`) lives in `dags/notifiers.py`;
this module never imports Airflow.
"""

from __future__ import annotations

import json
import logging
import os
import smtplib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from curation.config import NotifyConfig

if TYPE_CHECKING:
    from curation.gates import GateReport

log = logging.getLogger(__name__)


class NotificationError(Exception):
    """A notifier could not deliver its message (the caller logs it; the gate's verdict stands)."""


@dataclass(frozen=True)
class GateEvent:
    status: str  # "failed" | "overridden" | "warning" | "passed"
    build_id: str
    corpus: str
    summary: str  # one line, for a chat message title or an e-mail subject
    message: str  # the failure message: every failed check, observed vs expected, report links
    report_uri: str
    html_uri: str
    failed_checks: list[dict[str, Any]] = field(default_factory=list)
    override: dict[str, Any] | None = None

    @classmethod
    def from_report(cls, report: GateReport) -> GateEvent:
        critical, warnings = report.failed("critical"), report.failed("warning")
        if critical and report.override:
            status = "overridden"
            summary = (
                f"[{report.corpus}] gate OVERRIDDEN for {report.build_id}: {len(critical)} critical check(s) failed,"
                f" published anyway ({report.override.get('reason')})"
            )
        elif critical:
            status = "failed"
            summary = (
                f"[{report.corpus}] gate FAILED for {report.build_id}: {len(critical)} critical check(s) failed, not published"
            )
        elif warnings:
            status = "warning"
            summary = f"[{report.corpus}] gate passed for {report.build_id} with {len(warnings)} warning(s)"
        else:
            status = "passed"
            summary = f"[{report.corpus}] gate passed for {report.build_id}"
        return cls(
            status=status,
            build_id=report.build_id,
            corpus=report.corpus,
            summary=summary,
            message=report.failure_message(),
            report_uri=report.report_uri,
            html_uri=report.html_uri,
            failed_checks=[
                {"name": c.name, "severity": c.severity, "observed": c.observed, "expected": c.expected} for c in report.failed()
            ],
            override=report.override,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notifier(Protocol):
    name: str

    def send(self, event: GateEvent) -> None:
        """Deliver the event; raise NotificationError (or OSError) when it could not be delivered."""


class LogNotifier:
    name = "log"

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or log

    def send(self, event: GateEvent) -> None:
        level = logging.ERROR if event.status == "failed" else logging.WARNING
        self.logger.log(level, "%s\n%s", event.summary, event.message)


class WebhookNotifier:
    """POSTs the event as JSON; ``text`` holds summary + message so Slack/Teams-style hooks show it."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0):
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s), got scheme {urlsplit(url).scheme!r}")
        self.url = url
        self.timeout_s = timeout_s

    def send(self, event: GateEvent) -> None:
        body = json.dumps({"text": f"{event.summary}\n{event.message}", "event": event.to_dict()}, default=str).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        where = _redacted(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # the scheme was checked in __init__
                response.read()
        except urllib.error.HTTPError as exc:
            raise NotificationError(f"webhook {where} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise NotificationError(f"webhook {where} unreachable within {self.timeout_s}s: {exc}") from exc


class EmailNotifier:
    """Plain-text e-mail through an SMTP relay (STARTTLS and login optional, credentials from env)."""

    name = "email"

    def __init__(
        self,
        host: str,
        recipients: list[str],
        sender: str = "curation@localhost",
        port: int = 25,
        starttls: bool = False,
        timeout_s: float = 10.0,
        user_env: str | None = None,
        password_env: str | None = None,
    ):
        self.host, self.port, self.recipients, self.sender = host, port, list(recipients), sender
        self.starttls, self.timeout_s = starttls, timeout_s
        self.user_env, self.password_env = user_env, password_env

    def send(self, event: GateEvent) -> None:
        mail = EmailMessage()
        mail["Subject"] = event.summary
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail.set_content(f"{event.message}\n")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls()
                user = os.environ.get(self.user_env) if self.user_env else None
                if user:
                    smtp.login(user, os.environ.get(self.password_env or "", ""))
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(f"e-mail via {self.host}:{self.port} failed: {exc}") from exc


def notifiers_from_config(cfg: NotifyConfig) -> list[Notifier]:
    """The notifiers `gate.notify` asks for (log, webhook, e-mail)."""
    out: list[Notifier] = []
    if cfg.log:
        out.append(LogNotifier())
    url = cfg.webhook_url or (os.environ.get(cfg.webhook_url_env) if cfg.webhook_url_env else None)
    if url:
        out.append(WebhookNotifier(url, cfg.webhook_timeout_s))
    elif cfg.webhook_url_env:
        log.warning("gate.notify.webhook_url_env names %s, which is not set: no webhook notification", cfg.webhook_url_env)
    if cfg.email_to:
        if not cfg.smtp_host:
            log.warning("gate.notify.email_to is set but smtp_host is not: no e-mail notification")
        else:
            out.append(
                EmailNotifier(
                    cfg.smtp_host,
                    cfg.email_to,
                    sender=cfg.email_from,
                    port=cfg.smtp_port,
                    starttls=cfg.smtp_starttls,
                    timeout_s=cfg.smtp_timeout_s,
                    user_env=cfg.smtp_user_env,
                    password_env=cfg.smtp_password_env,
                )
            )
    return out


def send(event: GateEvent, notifiers: list[Notifier]) -> dict[str, str]:
    """Send `event` through every notifier; returns {name: "sent" | "error: ..."}; never raises."""
    results: dict[str, str] = {}
    for notifier in notifiers:
        try:
            notifier.send(event)
            results[notifier.name] = "sent"
        except Exception as exc:  # a broken channel must not mask the gate's verdict
            results[notifier.name] = f"error: {exc}"
            log.error("gate notification via %s failed: %s", notifier.name, exc)
    return results


def _redacted(url: str) -> str:
    """scheme://host[:port]/... : webhook paths often carry tokens, so never log them."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}/..."
