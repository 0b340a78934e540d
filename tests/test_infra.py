"""The deployment files parse and stay free of credentials (no engine here to run them)."""

import re
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"


def test_compose_and_helm_values_parse_and_hold_no_secrets():
    compose = yaml.safe_load((INFRA / "docker-compose.yaml").read_text())
    assert {"scheduler", "api-server", "worker-cpu", "worker-gpu", "postgres", "redis", "s3"} <= set(compose["services"])
    assert yaml.safe_load((INFRA / "helm-values.yaml").read_text())["executor"] == "CeleryExecutor"
    for path in INFRA.iterdir():
        text = path.read_text()
        # Passwords and keys are only ever ${VARIABLES} or secret references.
        assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY)[A-Z_]*:\s*[\"']?[A-Za-z0-9/+]{8,}", text), path
    assert "127.0.0.1:8080:8080" in (INFRA / "docker-compose.yaml").read_text()  # UI not exposed beyond the host
