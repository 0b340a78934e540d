"""Pytest fixtures for a real S3 server (SeaweedFS), see tests/s3server.py.

Wire into tests/conftest.py with:

    pytest_plugins = ["tests.conftest_s3"]
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.s3server import S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole test session."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, uniquely named bucket; AWS_* env points at s3_server for the test."""
    name = f"test-{secrets.token_hex(8)}"
    s3_server.create_bucket(name)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    # Settings from the developer's machine must not redirect the SDKs.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return name
