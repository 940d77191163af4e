"""The bench's network namespace and the origin inside it: nginx with an access log we count from.

Nothing leaves the namespace: every client (curl, ffprobe over HTTP, the mount daemons started with
`nsenter --net`) talks to 127.0.0.1 in it; only FUSE mounts are visible outside (nsenter keeps the mount
namespace). The delay (bench/delay.py) is applied to the namespace's loopback, so it covers every
connection in it and nothing outside.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Cleanup, run, stop_pid, wait_for

NGINX_PORT = 8081


class Netns:
    def __init__(self, cleanup: Cleanup, tag: str = "") -> None:
        self.name = f"vidfsbench{tag}{os.getpid()}"
        run(["ip", "netns", "add", self.name])
        cleanup.push(f"netns {self.name}", self.delete)
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def delete(self) -> None:
        run(["ip", "netns", "delete", self.name], check=False)

    @property
    def prefix(self) -> list[str]:
        """Run a command in the namespace (nsenter execs it: the PID we get is the command's)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def url_answers(self, url: str) -> bool:
        probe = [*self.prefix, "curl", "-s", "-o", "/dev/null", "--max-time", "2", url]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    def wait_url(self, url: str, process: subprocess.Popen[Any], what: str) -> None:
        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with status {process.returncode}")
            return self.url_answers(url)

        wait_for(up, 30, what, step=0.1)

    def start(self, cmd: list[str], log: Path, cleanup: Cleanup, what: str) -> subprocess.Popen[Any]:
        """Start a server in the namespace, stopped by PID at cleanup."""
        with open(log, "ab") as out:
            process = subprocess.Popen([*self.prefix, *cmd], stdout=out, stderr=out)
        cleanup.push(what, lambda: stop_pid(process))
        return process


@dataclass(frozen=True)
class LogEntry:
    method: str
    status: int
    bytes: int
    path: str
    range: str
    agent: str
    time: float
    seconds: float
    connection: int


def served(entries: list[LogEntry], name: str) -> tuple[int, int]:
    """Requests for /name and the body bytes they were sent."""
    mine = [e for e in entries if e.path.split("?", 1)[0] == "/" + name]
    return len(mine), sum(e.bytes for e in mine)


class Origin:
    """nginx (autoindex, an access log with what we count) serving `data` on 127.0.0.1:8081."""

    LOG_FORMAT = (
        '$msec $request_method $status $body_bytes_sent $request_time "$request_uri" "$http_range" '
        '"$http_user_agent" $connection $connection_requests'
    )
    _LINE = re.compile(r'^(\S+) (\S+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" (\d+) (\d+)$')

    def __init__(self, ns: Netns, work: Path, data: dict[str, Path], cleanup: Cleanup) -> None:
        self.ns = ns
        root = work / "www"
        root.mkdir()
        for name, path in data.items():
            if path.stat().st_dev == root.stat().st_dev:
                os.link(path, root / name)
            else:
                os.symlink(path, root / name)
        self.log_path = work / "access.log"
        conf = work / "nginx.conf"
        (work / "nginx-temp").mkdir()
        conf.write_text(self._config(work, root))
        self.nginx = ns.start(
            ["nginx", "-c", str(conf), "-p", str(work)], work / "nginx.out", cleanup, "nginx"
        )
        self.port = NGINX_PORT
        ns.wait_url(f"http://127.0.0.1:{NGINX_PORT}/", self.nginx, "nginx")

    def _config(self, work: Path, root: Path) -> str:
        temp = work / "nginx-temp"
        temps = "".join(
            f"    {kind}_temp_path {temp}/{kind};\n" for kind in ("proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""daemon off;
user root;
worker_processes 2;
pid {work / "nginx.pid"};
error_log {work / "nginx-error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    types {{ video/mp4 mp4; application/octet-stream bin; }}
    default_type application/octet-stream;
    log_format bench '{self.LOG_FORMAT}';
    access_log {self.log_path} bench;
    sendfile on;
    # tcp_nopush (TCP_CORK) with sendfile stalls the last segment of a response for a delayed ACK
    # (40 ms) on keep-alive connections, even without any added delay: off, so only the RTT counts.
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {temp}/body;
{temps}    server {{
        listen 127.0.0.1:{NGINX_PORT};
        root {root};
        disable_symlinks off;
        location / {{ autoindex on; autoindex_exact_size on; }}
    }}
}}
"""

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def settle(self, quiet: float = 0.6, timeout: float = 20.0) -> None:
        """Wait until nginx has logged everything it is going to (no new line for `quiet` seconds)."""
        deadline = time.monotonic() + timeout
        last, since = self.log_offset(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.log_offset()
            if now != last:
                last, since = now, time.monotonic()

    def entries(self, start: int, end: int | None = None) -> list[LogEntry]:
        """The log's entries from offset `start` (to `end`)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            raw = fh.read() if end is None else fh.read(max(0, end - start))
            text = raw.decode("utf-8", errors="replace")
        out = []
        for line in text.splitlines():
            if m := self._LINE.match(line):
                out.append(
                    LogEntry(
                        method=m.group(2),
                        status=int(m.group(3)),
                        bytes=int(m.group(4)),
                        path=m.group(6),
                        range=m.group(7),
                        agent=m.group(8),
                        time=float(m.group(1)),
                        seconds=float(m.group(5)),
                        connection=int(m.group(9)),
                    )
                )
        return out

    def served_since(self, start: int, name: str) -> tuple[int, int]:
        self.settle()
        return served(self.entries(start), name)
