"""Start the app (`streamlit run app.py`) on a loopback port and stop it again: one helper for
the browser tests (`tests/browser/conftest.py`) and the benchmarks that drive a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class AppServerError(RuntimeError):
    """The app server did not answer its health check in time (the message names its log)."""


@dataclass(frozen=True)
class RunningApp:
    url: str
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(log_dir: Path, env: dict[str, str], args: tuple[str, ...] = (), *,
                port: int | None = None, timeout: float = 60.0) -> Iterator[RunningApp]:
    """Run the app on ``port`` (default: a free loopback port) with ``env`` added to the
    environment and ``args`` added to its command line; yields once `/_stcore/health` answers,
    stops the server after. Its output goes to ``log_dir/streamlit.log``."""
    port = port or free_port()
    log = (Path(log_dir) / "streamlit.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.fileWatcherType", "none", *args],
        cwd=ROOT, env=dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **env),
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AppServerError(f"the app server did not answer on {url} within {timeout:.0f} s; "
                                         f"see {log.name}") from None
                time.sleep(0.2)
        yield RunningApp(url=url, process=server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
