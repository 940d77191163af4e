"""vidfs against curl (the limit), rclone mount and httpdirfs, on one nginx, at a given round-trip time.

    sudo bench/run.sh                 # 3 runs at 20 ms RTT, median of each figure
    sudo bench/run.sh --runs 1 --rtt-ms 50 --peers vidfs,curl
    sudo bench/run.sh --quick         # smoke run: 64 MiB file, a small movie, 1 run

What it does, in one run:
1. installs what it lacks from Debian (`apt-get install nginx rclone httpdirfs curl ffmpeg`); a peer whose
   package cannot be installed is reported as missing in the table, not dropped;
2. makes its data once and keeps it (`~/.cache/vidfs/bench`, or `--data-dir`): a 512 MiB file of seeded
   random bytes and an MP4 of about 230 MB with the moov atom at the end (ffmpeg, bit-exact flags);
3. creates a network namespace of its own and serves the data from nginx (autoindex on) inside it, on the
   namespace's loopback; the round-trip time (`--rtt-ms`, default 20) comes from netem on that `lo` when
   the kernel has it, else from `bench/delay_proxy.py`, a splice-based TCP proxy that holds every byte
   for RTT/2 per direction. Nothing leaves the namespace: every client (curl, ffprobe over HTTP, and the
   mount daemons, started with `nsenter --net`) talks to 127.0.0.1 in it; only FUSE mounts are visible
   outside (nsenter keeps the mount namespace);
4. for every peer — curl, vidfs (`type = "http"`, `--subtree`), `rclone mount` (http remote, VFS cache
   off and `--vfs-cache-mode full`), httpdirfs (without and with `--cache`) — on fresh mounts with empty
   caches: `ffprobe` of the MP4 (time, requests and bytes nginx served, from its access log), 200 seeded
   random 64 KiB preads of the random file (p50, p95, bytes served, every read compared with the source),
   a cold sequential read (MB/s, sha256) and a warm re-read (MB/s; then its sha256, untimed), and the
   peak RSS of the mount process (VmHWM);
5. prints a Markdown table (medians over `--runs`), checks vidfs against the targets of issue 7, and
   writes everything, every run's raw figures included, to `bench/results/<time>.json`.

Everything it starts is stopped by PID and every mount unmounted, the namespace deleted, on success,
failure or Ctrl-C. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
MB = 1_000_000
MiB = 1 << 20
READ_CHUNK = 1 << 20

PEERS = ("curl", "vidfs", "rclone", "rclone-full", "httpdirfs", "httpdirfs-cache")
LABELS = {
    "curl": "curl",
    "vidfs": "vidfs",
    "rclone": "rclone (VFS off)",
    "rclone-full": "rclone (cache full)",
    "httpdirfs": "httpdirfs",
    "httpdirfs-cache": "httpdirfs (cache)",
}
TOOLS = {  # peer → (binary, Debian package)
    "curl": ("curl", "curl"),
    "rclone": ("rclone", "rclone"),
    "rclone-full": ("rclone", "rclone"),
    "httpdirfs": ("httpdirfs", "httpdirfs"),
    "httpdirfs-cache": ("httpdirfs", "httpdirfs"),
}
NEEDED = {"nginx": "nginx", "ffmpeg": "ffmpeg", "ffprobe": "ffmpeg", "curl": "curl", "ip": "iproute2"}
NEEDED |= {"nsenter": "util-linux", "fusermount3": "fuse3"}

RANDOM_NAME = "random.bin"
MOVIE_NAME = "movie.mp4"
SERVER_PORT = 8081  # nginx, inside the namespace
PROXY_PORT = 8080  # the delaying proxy in front of it (or nginx itself under netem)
CHECK_PROXY_PORT = 8079  # the same proxy with no delay: shows the proxy is not the bottleneck
PHASE_TIMEOUT = 900.0


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup
@dataclass
class Options:
    rtt_ms: float
    runs: int
    quick: bool
    peers: list[str]
    data_dir: Path
    results_dir: Path
    seed: int
    file_mib: int
    movie_seconds: int
    reads: int
    read_size: int
    vidfs_set: list[str]
    max_read_seconds: float
    install: bool
    keep_workdir: bool


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="bench/run.sh", description=(__doc__ or "").split("\n\n")[0], allow_abbrev=False
    )
    p.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time to emulate (default 20)")
    p.add_argument("--runs", type=int, default=3, help="runs; each figure is the median (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 MiB file, short movie, 1 run")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {', '.join(PEERS)}")
    p.add_argument("--data-dir", type=Path, help="where the data is kept (default ~/.cache/vidfs/bench)")
    p.add_argument("--results-dir", type=Path, default=BENCH / "results", help="where the JSON goes")
    p.add_argument("--seed", type=int, default=20261122, help="seed of the data and the random offsets")
    p.add_argument("--reads", type=int, default=200, help="random reads (default 200)")
    p.add_argument(
        "--max-read-seconds",
        type=float,
        default=60.0,
        help="stop a sequential read after this long and report the rate so far (default 60)",
    )
    p.add_argument(
        "--vidfs-set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help='a vidfs config value (TOML) for experiments, e.g. cache.disk=\x27"0"\x27 (repeatable)',
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing tools")
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and configs (the path is printed)")
    a = p.parse_args(argv)
    peers = [name.strip() for name in a.peers.split(",") if name.strip()]
    unknown = [name for name in peers if name not in PEERS]
    if unknown:
        p.error(f"unknown peers: {', '.join(unknown)}")
    if a.runs < 1:
        p.error("--runs must be at least 1")
    data_dir = (
        a.data_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidfs" / "bench"
    )
    return Options(
        rtt_ms=a.rtt_ms,
        runs=1 if a.quick else a.runs,
        quick=a.quick,
        peers=peers,
        data_dir=data_dir,
        results_dir=a.results_dir,
        seed=a.seed,
        file_mib=64 if a.quick else 512,
        movie_seconds=6 if a.quick else 48,
        reads=min(a.reads, 50) if a.quick else a.reads,
        read_size=64 * 1024,
        vidfs_set=list(a.vidfs_set),
        max_read_seconds=a.max_read_seconds,
        install=not a.no_install,
        keep_workdir=a.keep_workdir,
    )


def run(
    cmd: Sequence[str], *, timeout: float = 120, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return result


def ensure_tools(opts: Options) -> dict[str, str]:
    """Install what is missing; returns binary → "" (present) or the reason it is missing."""
    wanted = dict(NEEDED)
    for peer in opts.peers:
        if peer in TOOLS:
            binary, package = TOOLS[peer]
            wanted[binary] = package
    missing = {binary: package for binary, package in wanted.items() if shutil.which(binary) is None}
    status = {binary: "" for binary in wanted}
    if not missing:
        return status
    packages = sorted(set(missing.values()))
    if not opts.install:
        for binary, package in missing.items():
            status[binary] = f"not installed (apt package {package}; --no-install given)"
        return status
    say(f"installing {', '.join(packages)} from Debian …")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], timeout=600, check=False, env=env)
    for package in packages:
        policy = run(["apt-cache", "policy", package], check=False).stdout
        candidate = re.search(r"Candidate:\s*(\S+)", policy)
        if candidate is None or candidate.group(1) == "(none)":
            for binary, pkg in missing.items():
                if pkg == package:
                    status[binary] = f"apt has no candidate for {package}"
            continue
        result = run(["apt-get", "install", "-y", "-qq", package], timeout=900, check=False, env=env)
        if result.returncode != 0:
            for binary, pkg in missing.items():
                if pkg == package:
                    status[binary] = f"apt-get install {package} failed: {result.stderr.strip()[-200:]}"
    for binary in missing:
        if not status[binary] and shutil.which(binary) is None:
            status[binary] = f"{binary} still missing after installing {missing[binary]}"
    return status


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return "missing"
        lines = (r.stdout + r.stderr).strip().splitlines() or ["?"]
        name = Path(cmd[0]).name.lower()
        return next((line for line in lines if name in line.lower()), lines[0])

    git = first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "-C", str(REPO), "status", "--porcelain"], check=False).stdout.strip()
    return {
        "vidfs": first([sys.executable, "-c", "import vidfs; print(vidfs.__version__)"])
        + f" ({git}{'+changes' if dirty else ''}, {REPO})",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nginx": first(["nginx", "-v"]),
        "rclone": first(["rclone", "version"]),
        "httpdirfs": first(["httpdirfs", "-V"]),
        "curl": first(["curl", "-V"]),
        "ffprobe": first(["ffprobe", "-version"]),
    }


# ----------------------------------------------------------------------------------------------- data
def _sidecar_ok(path: Path, recipe: dict[str, Any]) -> str | None:
    meta = path.with_name(path.name + ".json")
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if data.get("recipe") != recipe or not path.is_file() or path.stat().st_size != data.get("size"):
        return None
    return str(data["sha256"])


def _sidecar_write(path: Path, recipe: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MiB):
            digest.update(chunk)
    meta = {"recipe": recipe, "size": path.stat().st_size, "sha256": digest.hexdigest()}
    path.with_name(path.name + ".json").write_text(json.dumps(meta, indent=1) + "\n")
    return digest.hexdigest()


def make_random_file(directory: Path, mib: int, seed: int) -> tuple[Path, str]:
    path = directory / f"random-{mib}MiB-{seed}.bin"
    recipe = {"kind": "random.Random(seed).randbytes, 1 MiB at a time", "mib": mib, "seed": seed}
    known = _sidecar_ok(path, recipe)
    if known:
        return path, known
    say(f"making {path.name} ({mib} MiB of seeded random bytes) …")
    rng = random.Random(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for _ in range(mib):
            fh.write(rng.randbytes(MiB))
    os.replace(tmp, path)
    return path, _sidecar_write(path, recipe)


def make_movie(directory: Path, seconds: int) -> tuple[Path, str]:
    path = directory / f"movie-moov-end-{seconds}s.mp4"
    args = [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=25:duration={seconds},noise=alls=12:allf=t",
        "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-threads", "2", "-g", "50", "-pix_fmt", "yuv420p",
        "-b:v", "36M", "-maxrate", "36M", "-bufsize", "72M", "-c:a", "aac", "-b:a", "128k",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-map_metadata", "-1", "-f", "mp4",
    ]  # fmt: skip
    recipe = {"ffmpeg": args[6:], "ffmpeg_version": versions_ffmpeg()}
    known = _sidecar_ok(path, recipe)
    if known:
        return path, known
    say(f"making {path.name} ({seconds} s of 1280x720 at 36 Mb/s, moov at the end) with ffmpeg …")
    tmp = path.with_name(path.name + ".tmp.mp4")
    run([*args, str(tmp)], timeout=1800)
    if not moov_at_end(tmp):
        raise RuntimeError(f"{tmp}: the moov atom is not at the end")
    os.replace(tmp, path)
    return path, _sidecar_write(path, recipe)


def versions_ffmpeg() -> str:
    return run(["ffmpeg", "-version"], check=False).stdout.split("\n", 1)[0]


def moov_at_end(path: Path) -> bool:
    order: list[bytes] = []
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            header = fh.read(16)
            box = int.from_bytes(header[:4], "big")
            if box == 1:
                box = int.from_bytes(header[8:16], "big")
            elif box == 0:
                box = size - offset
            if box < 8:
                break
            order.append(header[4:8])
            offset += box
    return b"moov" in order and b"mdat" in order and order.index(b"moov") > order.index(b"mdat")


# ----------------------------------------------------------------------------------- processes, netns
class Cleanup:
    """Undo actions, run last-in first-out, each at most once, whatever happens."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> Callable[[], None]:
        entry = (what, action)
        self._actions.append(entry)

        def now() -> None:
            if entry in self._actions:
                self._actions.remove(entry)
                action()

        return now

    def run_all(self) -> None:
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # keep cleaning up
                say(f"cleanup of {what} failed: {exc}")


def stop_pid(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class Netns:
    def __init__(self, cleanup: Cleanup) -> None:
        self.name = f"vidfsbench{os.getpid()}"
        run(["ip", "netns", "add", self.name])
        cleanup.push(f"netns {self.name}", self.delete)
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def delete(self) -> None:
        run(["ip", "netns", "delete", self.name], check=False)

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def try_netem(self, rtt_ms: float) -> bool:
        if rtt_ms <= 0:
            return True
        delay = f"{rtt_ms / 2:g}ms"
        cmd = [*self.prefix, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", delay]
        result = run(cmd, check=False)
        if result.returncode != 0:
            say(
                f"netem is not available ({result.stderr.strip() or result.returncode});"
                " using the delay proxy"
            )
            return False
        return True


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g}s")
        time.sleep(step)


class Server:
    """nginx (autoindex, an access log with what we count) and, without netem, the delaying proxy."""

    LOG_FORMAT = (
        '$msec $request_method $status $body_bytes_sent $request_time "$request_uri" "$http_range" '
        '"$http_user_agent" $connection $connection_requests'
    )

    def __init__(self, ns: Netns, work: Path, data: dict[str, Path], rtt_ms: float, cleanup: Cleanup) -> None:
        self.ns = ns
        root = work / "www"
        root.mkdir()
        for name, path in data.items():
            if _same_fs(path, root):
                os.link(path, root / name)
            else:
                os.symlink(path, root / name)
        self.log_path = work / "access.log"
        conf = work / "nginx.conf"
        temp = work / "nginx-temp"
        temp.mkdir()
        conf.write_text(
            f"""daemon off;
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
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    server {{
        listen 127.0.0.1:{SERVER_PORT};
        root {root};
        disable_symlinks off;
        location / {{ autoindex on; autoindex_exact_size on; }}
    }}
}}
"""
        )
        log = open(work / "nginx.out", "ab")  # noqa: SIM115 - the child owns it
        self.nginx = subprocess.Popen(
            [*ns.prefix, "nginx", "-c", str(conf), "-p", str(work)], stdout=log, stderr=log
        )
        log.close()
        cleanup.push("nginx", lambda: stop_pid(self.nginx))
        self._wait_port(SERVER_PORT, self.nginx, "nginx")
        self.netem = ns.try_netem(rtt_ms)
        self.proxies: list[subprocess.Popen[Any]] = []
        if self.netem:
            self.port = SERVER_PORT
            self.delay = f"netem on lo ({rtt_ms / 2:g} ms each way)"
        else:
            self.port = PROXY_PORT
            self._proxy(PROXY_PORT, rtt_ms, work, cleanup)
            self._proxy(CHECK_PROXY_PORT, 0.0, work, cleanup)
            self.delay = f"bench/delay_proxy.py ({rtt_ms / 2:g} ms each way)"
        self.url = f"http://127.0.0.1:{self.port}/"

    def _proxy(self, port: int, rtt_ms: float, work: Path, cleanup: Cleanup) -> None:
        log = open(work / f"proxy-{port}.log", "ab")  # noqa: SIM115
        cmd = [*self.ns.prefix, sys.executable, str(BENCH / "delay_proxy.py")]
        cmd += [
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            f"127.0.0.1:{SERVER_PORT}",
            "--rtt-ms",
            f"{rtt_ms:g}",
        ]
        process = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()
        cleanup.push(f"proxy :{port}", lambda: stop_pid(process))
        self.proxies.append(process)
        self._wait_port(port, process, "delay proxy")

    def _wait_port(self, port: int, process: subprocess.Popen[Any], what: str) -> None:
        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited with status {process.returncode}")
            probe = [
                *self.ns.prefix,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                f"http://127.0.0.1:{port}/",
            ]
            return subprocess.run(probe, capture_output=True, check=False).returncode == 0

        wait_for(up, 30, what, step=0.1)

    # ---- the access log ----
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

    _LINE = re.compile(r'^(\S+) (\S+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" (\d+) (\d+)$')

    def entries(self, start: int) -> list[dict[str, Any]]:
        with open(self.log_path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace")
        out = []
        for line in text.splitlines():
            m = self._LINE.match(line)
            if m:
                out.append(
                    {
                        "method": m.group(2),
                        "status": int(m.group(3)),
                        "bytes": int(m.group(4)),
                        "path": m.group(6),
                        "range": m.group(7),
                        "agent": m.group(8),
                        "time": float(m.group(1)),
                        "seconds": float(m.group(5)),
                        "connection": int(m.group(9)),
                    }
                )
        return out


def is_mounted(path: Path) -> bool:
    """From /proc/self/mountinfo: os.path.ismount() says False for a FUSE mount whose daemon died
    (stat fails with ENOTCONN), and such a mount must still be unmounted."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class HwmWatcher:
    """The peak RSS of a short-lived process (VmHWM, polled until it exits). Not rusage: a child's
    ru_maxrss also counts the Python image it was forked from before exec."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while (value := vm_hwm_mib(self.pid)) is not None:
            self.peak = value
            time.sleep(0.05)


# ------------------------------------------------------------------------------------------------ mounts
class Mount:
    """One FUSE mount of one peer, its daemon started in the namespace, stopped by PID."""

    def __init__(self, peer: str, server: Server, work: Path, opts: Options) -> None:
        self.peer = peer
        self.dir = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=work))
        self.path = self.dir / "mnt"
        self.cache = self.dir / "cache"
        self.path.mkdir()
        self.cache.mkdir()
        self.log = self.dir / "mount.log"
        cmd = self._command(server.url, opts)
        with open(self.log, "ab") as log:
            cwd = REPO if peer == "vidfs" else self.dir
            self.process = subprocess.Popen(
                [*server.ns.prefix, *cmd], stdout=log, stderr=log, cwd=cwd, start_new_session=True
            )
        try:
            wait_for(self._mounted, 120, f"{peer} mount")
        except BaseException:
            self.stop()
            raise

    def _command(self, url: str, opts: Options) -> list[str]:
        if self.peer == "vidfs":
            config = self.dir / "vidfs.toml"
            tables: dict[str, list[str]] = {"cache": [f'dir = "{self.cache}"']}
            for item in opts.vidfs_set:
                key, _, value = item.partition("=")
                table, _, name = key.strip().rpartition(".")
                tables.setdefault(table or "cache", []).append(f"{name} = {value.strip()}")
            tables["providers.bench"] = ['type = "http"', f'url = "{url}"']
            config.write_text("".join(f"[{t}]\n" + "\n".join(lines) + "\n\n" for t, lines in tables.items()))
            return [sys.executable, "-m", "vidfs", "mount", str(config), str(self.path), "--subtree", "bench"]
        if self.peer in ("rclone", "rclone-full"):
            rc = self.dir / "rclone.conf"
            rc.write_text("")
            mode = "full" if self.peer == "rclone-full" else "off"
            return [
                "rclone", "mount", ":http:", str(self.path), "--http-url", url, "--read-only",
                "--config", str(rc), "--cache-dir", str(self.cache), "--vfs-cache-mode", mode,
            ]  # fmt: skip
        if self.peer == "httpdirfs":
            # --no-range-check: httpdirfs 1.2.5 wrongly finds that nginx cannot do ranges and exits
            # (httpdirfs issue 188); nginx can.
            return ["httpdirfs", "-f", "--no-range-check", url, str(self.path)]
        if self.peer == "httpdirfs-cache":
            cache = ["--cache", "--cache-location", str(self.cache)]
            return ["httpdirfs", "-f", "--no-range-check", *cache, url, str(self.path)]
        raise ValueError(self.peer)

    def _mounted(self) -> bool:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"{self.peer} exited with status {self.process.returncode}: {tail}")
        return os.path.ismount(self.path)

    def rss_mib(self) -> float | None:
        return vm_hwm_mib(self.process.pid)

    def stop(self) -> None:
        if is_mounted(self.path):
            run(["fusermount3", "-u", str(self.path)], check=False, timeout=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_pid(self.process)
        if is_mounted(self.path):
            run(["fusermount3", "-uz", str(self.path)], check=False, timeout=60)
        shutil.rmtree(self.cache, ignore_errors=True)


@contextlib.contextmanager
def mounted(peer: str, server: Server, work: Path, opts: Options, cleanup: Cleanup) -> Iterator[Mount]:
    mount = Mount(peer, server, work, opts)
    undo = cleanup.push(f"{peer} mount", mount.stop)
    try:
        yield mount
    finally:
        undo()


# ------------------------------------------------------------------------------------------ measuring
@dataclass
class ReadResult:
    seconds: float
    total: int
    sha256: str | None
    complete: bool  # False: stopped at the time limit

    @property
    def mbps(self) -> float:
        return self.total / self.seconds / MB if self.seconds > 0 else 0.0


READ_LIMIT = [60.0]  # seconds one sequential read may take (--max-read-seconds); slow peers stop there


def read_through(fd_read: Callable[[bytearray], int], *, hashed: bool) -> ReadResult:
    """Read until EOF (or the time limit) with 1 MiB reads; hash in a second thread so that hashing does
    not slow reading down."""
    digest = hashlib.sha256()
    free: queue.Queue[bytearray] = queue.Queue()
    work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
    for _ in range(16):
        free.put(bytearray(READ_CHUNK))

    def hasher() -> None:
        while (item := work.get()) is not None:
            buf, n = item
            digest.update(memoryview(buf)[:n])
            free.put(buf)

    thread = threading.Thread(target=hasher, daemon=True)
    if hashed:
        thread.start()
    total = 0
    started = time.monotonic()
    deadline = started + READ_LIMIT[0]
    complete = True
    while True:
        buf = free.get()
        n = fd_read(buf)
        if n <= 0:
            free.put(buf)
            break
        total += n
        if hashed:
            work.put((buf, n))
        else:
            free.put(buf)
        if time.monotonic() > deadline:
            complete = False
            break
    if hashed:
        work.put(None)
        thread.join()
    return ReadResult(time.monotonic() - started, total, digest.hexdigest() if hashed else None, complete)


def read_file(path: Path, *, hashed: bool) -> ReadResult:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_through(lambda buf: os.readv(fd, [buf]), hashed=hashed)
    finally:
        os.close(fd)


def prefix_sha256(path: Path, length: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while left > 0 and (chunk := fh.read(min(8 * MiB, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def matches(result: ReadResult, truth: Truth) -> bool:
    """The bytes read are the source's (all of it, or its first bytes when the read was cut short)."""
    if result.complete:
        return result.sha256 == truth.random_sha and result.total == truth.random_size
    return result.sha256 == prefix_sha256(truth.random_path, result.total)


def ffprobe_signature(output: str) -> Any:
    data = json.loads(output)
    fmt = data.get("format", {})
    streams = [(s.get("codec_name"), s.get("nb_frames"), s.get("duration")) for s in data.get("streams", [])]
    return (fmt.get("duration"), fmt.get("size"), fmt.get("bit_rate"), streams)


FFPROBE = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json"]


@dataclass
class Truth:
    random_path: Path
    random_sha: str
    random_size: int
    movie_path: Path
    movie_sha: str
    movie_size: int
    ffprobe: Any
    offsets: list[int]
    read_size: int


@dataclass
class Figures:
    """One peer's figures in one run (None: not measured)."""

    seq_mbps: float | None = None
    seq_ok: bool | None = None
    seq_partial: bool = False  # the read hit --max-read-seconds: the rate of what was read
    warm_mbps: float | None = None
    warm_ok: bool | None = None
    warm_partial: bool = False
    ffprobe_s: float | None = None
    ffprobe_requests: int | None = None
    ffprobe_mb: float | None = None
    ffprobe_ok: bool | None = None
    rand_p50_ms: float | None = None
    rand_p95_ms: float | None = None
    rand_mb: float | None = None
    rand_ok: bool | None = None
    rss_mib: float | None = None
    errors: list[str] = field(default_factory=list)


def served(entries: list[dict[str, Any]], name: str) -> tuple[int, int]:
    mine = [e for e in entries if e["path"].split("?", 1)[0] == "/" + name]
    return len(mine), sum(e["bytes"] for e in mine)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure_mount(
    peer: str, server: Server, work: Path, opts: Options, truth: Truth, cleanup: Cleanup
) -> Figures:
    fig = Figures()
    rss: list[float] = []

    def phase(name: str, body: Callable[[Mount], None]) -> None:
        try:
            with mounted(peer, server, work, opts, cleanup) as mount:
                os.listdir(mount.path)
                for item in (RANDOM_NAME, MOVIE_NAME):
                    os.stat(mount.path / item)  # lookups and listings happen before the counting starts
                server.settle(quiet=0.3)
                body(mount)
                value = mount.rss_mib()
                if value is not None:
                    rss.append(value)
        except Exception as exc:
            fig.errors.append(f"{name}: {exc}")
            say(f"{peer}: {name} failed: {exc}")

    def ffprobe_phase(mount: Mount) -> None:
        start = server.log_offset()
        began = time.monotonic()
        result = run([*FFPROBE, str(mount.path / MOVIE_NAME)], timeout=PHASE_TIMEOUT, check=False)
        fig.ffprobe_s = time.monotonic() - began
        fig.ffprobe_ok = result.returncode == 0 and ffprobe_signature(result.stdout) == truth.ffprobe
        value = mount.rss_mib()
        if value is not None:
            rss.append(value)
        mount.stop()  # anything still in flight ends now and is logged
        server.settle()
        count, nbytes = served(server.entries(start), MOVIE_NAME)
        fig.ffprobe_requests, fig.ffprobe_mb = count, nbytes / MB

    def random_phase(mount: Mount) -> None:
        start = server.log_offset()
        latencies, bad = [], 0
        fd = os.open(mount.path / RANDOM_NAME, os.O_RDONLY)
        try:
            with open(truth.random_path, "rb") as source:
                for offset in truth.offsets:
                    began = time.monotonic()
                    got = os.pread(fd, truth.read_size, offset)
                    latencies.append((time.monotonic() - began) * 1000)
                    source.seek(offset)
                    bad += got != source.read(truth.read_size)
        finally:
            os.close(fd)
        fig.rand_p50_ms, fig.rand_p95_ms = percentile(latencies, 0.5), percentile(latencies, 0.95)
        fig.rand_ok = bad == 0
        if bad:
            fig.errors.append(f"random: {bad} of {len(truth.offsets)} reads returned wrong bytes")
        value = mount.rss_mib()
        if value is not None:
            rss.append(value)
        mount.stop()
        server.settle()
        fig.rand_mb = served(server.entries(start), RANDOM_NAME)[1] / MB

    def sequential_phase(mount: Mount) -> None:
        cold = read_file(mount.path / RANDOM_NAME, hashed=True)
        fig.seq_mbps, fig.seq_ok = cold.mbps, matches(cold, truth)
        fig.seq_partial = not cold.complete
        warm = read_file(mount.path / RANDOM_NAME, hashed=False)
        fig.warm_mbps, fig.warm_partial = warm.mbps, not warm.complete
        fig.warm_ok = matches(read_file(mount.path / RANDOM_NAME, hashed=True), truth)

    phase("ffprobe", ffprobe_phase)
    phase("random reads", random_phase)
    phase("sequential", sequential_phase)
    fig.rss_mib = max(rss) if rss else None
    return fig


def measure_curl(server: Server, opts: Options, truth: Truth) -> Figures:
    fig = Figures()
    rss: list[float] = []
    prefix = server.ns.prefix
    url = server.url

    def curl_read(name: str, *, hashed: bool) -> ReadResult:
        process = subprocess.Popen([*prefix, "curl", "-s", "-f", url + name], stdout=subprocess.PIPE)
        assert process.stdout is not None
        fd = process.stdout.fileno()
        watcher = HwmWatcher(process.pid)
        try:
            result = read_through(lambda buf: os.readv(fd, [buf]), hashed=hashed)
        finally:
            process.stdout.close()  # a read cut short: curl ends on the closed pipe
            process.wait(timeout=60)
            if watcher.peak is not None:
                rss.append(watcher.peak)
        if process.returncode != 0 and result.complete:
            raise RuntimeError(f"curl exited {process.returncode}")
        return result

    try:
        cold = curl_read(RANDOM_NAME, hashed=True)
        fig.seq_mbps, fig.seq_ok, fig.seq_partial = cold.mbps, matches(cold, truth), not cold.complete
        warm = curl_read(RANDOM_NAME, hashed=False)
        fig.warm_mbps, fig.warm_ok, fig.warm_partial = warm.mbps, None, not warm.complete
    except Exception as exc:
        fig.errors.append(f"sequential: {exc}")

    try:
        server.settle(quiet=0.3)
        start = server.log_offset()
        began = time.monotonic()
        result = run([*prefix, *FFPROBE, url + MOVIE_NAME], timeout=PHASE_TIMEOUT, check=False)
        fig.ffprobe_s = time.monotonic() - began
        fig.ffprobe_ok = result.returncode == 0 and ffprobe_signature(result.stdout) == truth.ffprobe
        server.settle()
        fig.ffprobe_requests, nbytes = served(server.entries(start), MOVIE_NAME)
        fig.ffprobe_mb = nbytes / MB
    except Exception as exc:
        fig.errors.append(f"ffprobe: {exc}")

    try:
        start = server.log_offset()
        cmd = [*prefix, "curl"]
        for i, offset in enumerate(truth.offsets):
            if i:
                cmd.append("--next")
            cmd += ["-s", "-f", "-w", "%{stderr}%{time_total} %{size_download}\\n"]
            cmd += ["-r", f"{offset}-{offset + truth.read_size - 1}", url + RANDOM_NAME]
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = process.communicate(timeout=PHASE_TIMEOUT)
        if process.returncode != 0:
            raise RuntimeError(f"curl exited {process.returncode}")
        times = [float(line.split()[0]) * 1000 for line in err.decode().splitlines() if line.strip()]
        fig.rand_p50_ms, fig.rand_p95_ms = percentile(times, 0.5), percentile(times, 0.95)
        with open(truth.random_path, "rb") as source:
            expected = b""
            for offset in truth.offsets:
                source.seek(offset)
                expected += source.read(truth.read_size)
        fig.rand_ok = out == expected
        server.settle()
        fig.rand_mb = served(server.entries(start), RANDOM_NAME)[1] / MB
    except Exception as exc:
        fig.errors.append(f"random reads: {exc}")
    fig.rss_mib = max(rss) if rss else None
    return fig


def proxy_check(server: Server) -> dict[str, float] | None:
    """curl straight to nginx vs through the proxy without delay: the proxy must not be what limits."""
    if server.netem:
        return None
    out: dict[str, float] = {}
    for label, port in (("direct", SERVER_PORT), ("proxy_0ms", CHECK_PROXY_PORT), ("proxy_rtt", PROXY_PORT)):
        cmd = [*server.ns.prefix, "curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}"]
        result = run([*cmd, f"http://127.0.0.1:{port}/{RANDOM_NAME}"], timeout=PHASE_TIMEOUT, check=False)
        out[label + "_mbps"] = float(result.stdout or 0) / MB
    return out


# ------------------------------------------------------------------------------------------- reporting
NUMERIC = (
    "seq_mbps", "warm_mbps", "ffprobe_s", "ffprobe_requests", "ffprobe_mb",
    "rand_p50_ms", "rand_p95_ms", "rand_mb", "rss_mib",
)  # fmt: skip
CHECKS = ("seq_ok", "warm_ok", "ffprobe_ok", "rand_ok")


def summarize(runs: list[Figures]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in NUMERIC:
        values = [getattr(f, key) for f in runs if getattr(f, key) is not None]
        out[key] = statistics.median(values) if values else None
    for key in CHECKS:
        values = [getattr(f, key) for f in runs if getattr(f, key) is not None]
        out[key] = all(values) if values else None
    out["seq_partial"] = any(f.seq_partial for f in runs)
    out["warm_partial"] = any(f.warm_partial for f in runs)
    out["errors"] = [e for f in runs for e in f.errors]
    return out


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(summary: dict[str, dict[str, Any]], status: dict[str, str], peers: list[str], reads: int) -> str:
    head = "| | " + " | ".join(LABELS[p] for p in peers) + " |"
    rows = [head, "|---|" + "---:|" * len(peers)]

    def row(title: str, cell: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for peer in peers:
            if status.get(peer):
                cells.append(status[peer])
            else:
                cells.append(cell(summary[peer]))
        rows.append(f"| {title} | " + " | ".join(cells) + " |")

    row("sequential cold, MB/s", lambda s: _num(s["seq_mbps"]) + ("*" if s["seq_partial"] else ""))
    row(
        "ffprobe: s / requests / MB served",
        lambda s: f"{_num(s['ffprobe_s'], 2)} / {_num(s['ffprobe_requests'], 0)} / {_num(s['ffprobe_mb'])}",
    )
    row(
        f"random 64 KiB read p50 / p95, ms (MB served for {reads} reads)",
        lambda s: f"{_num(s['rand_p50_ms'])} / {_num(s['rand_p95_ms'])} ({_num(s['rand_mb'])})",
    )
    row("warm re-read, MB/s", lambda s: _num(s["warm_mbps"]) + ("*" if s["warm_partial"] else ""))
    row("peak RSS, MiB", lambda s: _num(s["rss_mib"]))

    def checks(s: dict[str, Any]) -> str:
        marks = []
        for key, short in (
            ("seq_ok", "seq"),
            ("warm_ok", "warm"),
            ("rand_ok", "random"),
            ("ffprobe_ok", "probe"),
        ):
            if s[key] is not None:
                marks.append(f"{short} {'ok' if s[key] else 'WRONG'}")
        return ", ".join(marks) or "–"

    row("checksums / bytes compared", checks)
    return "\n".join(rows)


def targets(
    summary: dict[str, dict[str, Any]], peers: list[str], movie_size: int
) -> list[tuple[str, bool | None, str]]:
    """Issue 7's targets for vidfs: (what, met, figures)."""
    v = summary.get("vidfs")
    c = summary.get("curl")
    if not v or not c:
        return []
    out: list[tuple[str, bool | None, str]] = []

    def ok(*values: Any) -> bool:
        return all(x is not None for x in values)

    others = [summary[p]["seq_mbps"] for p in peers if p not in ("vidfs", "curl") and summary[p]["seq_mbps"]]
    if ok(v["seq_mbps"], c["seq_mbps"]):
        met = v["seq_mbps"] >= 0.95 * c["seq_mbps"] and all(v["seq_mbps"] > o for o in others)
        out.append(
            (
                "sequential cold ≥ 0.95× curl and ahead of every peer",
                met,
                f"{v['seq_mbps']:.1f} vs curl {c['seq_mbps']:.1f} ({v['seq_mbps'] / c['seq_mbps']:.2f}×)"
                + (f", best peer {max(others):.1f}" if others else ", no other peer measured"),
            )
        )
    if ok(v["ffprobe_mb"], v["ffprobe_requests"], v["ffprobe_s"], c["ffprobe_s"]):
        limit = movie_size / MB * 0.01
        out.append(
            (
                "ffprobe ≤ 1 % of the MP4's bytes",
                v["ffprobe_mb"] <= limit,
                f"{v['ffprobe_mb']:.2f} MB of ≤ {limit:.2f}",
            )
        )
        out.append(("ffprobe ≤ 6 requests", v["ffprobe_requests"] <= 6, f"{v['ffprobe_requests']:.0f}"))
        out.append(
            (
                "ffprobe ≤ 1.1× ffprobe's own time over HTTP",
                v["ffprobe_s"] <= 1.1 * c["ffprobe_s"],
                f"{v['ffprobe_s']:.2f} s vs {c['ffprobe_s']:.2f} s ({v['ffprobe_s'] / c['ffprobe_s']:.2f}×)",
            )
        )
    if ok(v["rand_p50_ms"], c["rand_p50_ms"], v["rand_mb"], c["rand_mb"]):
        out.append(
            (
                "random p50 ≤ 1.2× curl's",
                v["rand_p50_ms"] <= 1.2 * c["rand_p50_ms"],
                f"{v['rand_p50_ms']:.1f} ms vs {c['rand_p50_ms']:.1f} ms"
                f" ({v['rand_p50_ms'] / c['rand_p50_ms']:.2f}×)",
            )
        )
        out.append(
            (
                "random bytes served ≤ 2× curl's",
                v["rand_mb"] <= 2 * c["rand_mb"],
                f"{v['rand_mb']:.1f} MB vs {c['rand_mb']:.1f} MB ({v['rand_mb'] / c['rand_mb']:.2f}×)",
            )
        )
    if ok(v["warm_mbps"]):
        out.append(("warm re-read ≥ 1.5 GB/s", v["warm_mbps"] >= 1500, f"{v['warm_mbps']:.0f} MB/s"))
    if ok(v["rss_mib"]):
        out.append(("peak RSS ≤ 100 MiB", v["rss_mib"] <= 100, f"{v['rss_mib']:.1f} MiB"))
    checks = [v[k] for k in CHECKS if v[k] is not None]
    out.append(
        (
            "every checksum matches",
            all(checks) if checks else None,
            ", ".join(k for k in CHECKS if v[k] is False) or "all",
        )
    )
    return out


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if os.geteuid() != 0:
        say("needs root (network namespaces, apt-get, FUSE mounts of other tools): sudo bench/run.sh")
        return 2
    cleanup = Cleanup()

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    work = Path(tempfile.mkdtemp(prefix="vidfs-bench-"))
    if not opts.keep_workdir:
        cleanup.push("work dir", lambda: shutil.rmtree(work, ignore_errors=True))
    try:
        return _main(opts, work, cleanup)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        cleanup.run_all()
        if opts.keep_workdir:
            say(f"logs and configs kept in {work}")


def _main(opts: Options, work: Path, cleanup: Cleanup) -> int:
    READ_LIMIT[0] = opts.max_read_seconds
    tools = ensure_tools(opts)
    for binary in ("nginx", "ffmpeg", "ffprobe", "curl", "ip", "nsenter", "fusermount3"):
        if tools.get(binary):
            say(f"cannot run without {binary}: {tools[binary]}")
            return 1
    status: dict[str, str] = {}
    for peer in opts.peers:
        if peer in TOOLS and tools.get(TOOLS[peer][0]):
            status[peer] = f"missing ({tools[TOOLS[peer][0]]})"
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    random_path, random_sha = make_random_file(opts.data_dir, opts.file_mib, opts.seed)
    movie_path, movie_sha = make_movie(opts.data_dir, opts.movie_seconds)
    rng = random.Random(opts.seed)
    size = random_path.stat().st_size
    truth = Truth(
        random_path=random_path,
        random_sha=random_sha,
        random_size=size,
        movie_path=movie_path,
        movie_sha=movie_sha,
        movie_size=movie_path.stat().st_size,
        ffprobe=ffprobe_signature(run([*FFPROBE, str(movie_path)]).stdout),
        offsets=[rng.randrange(0, size - opts.read_size) for _ in range(opts.reads)],
        read_size=opts.read_size,
    )
    ns = Netns(cleanup)
    server = Server(ns, work, {RANDOM_NAME: random_path, MOVIE_NAME: movie_path}, opts.rtt_ms, cleanup)
    say(f"nginx in netns {ns.name}, {server.url}, delay: {server.delay}")
    check = proxy_check(server)
    if check:
        say("proxy check (curl MB/s): " + ", ".join(f"{k} {v:.0f}" for k, v in check.items()))
    results: dict[str, list[Figures]] = {peer: [] for peer in opts.peers}
    started = time.time()
    for index in range(opts.runs):
        for peer in opts.peers:
            if status.get(peer):
                continue
            say(f"run {index + 1}/{opts.runs}: {LABELS[peer]} …")
            began = time.monotonic()
            if peer == "curl":
                fig = measure_curl(server, opts, truth)
            else:
                fig = measure_mount(peer, server, work, opts, truth, cleanup)
            say(f"  {LABELS[peer]}: {_brief(fig)} ({time.monotonic() - began:.0f} s)")
            results[peer].append(fig)
    summary = {peer: summarize(runs) for peer, runs in results.items()}
    for peer in opts.peers:
        if not status.get(peer) and not results[peer]:
            status[peer] = "not run"
    text = table(summary, status, opts.peers, opts.reads)
    goal_lines = targets(summary, opts.peers, truth.movie_size) if "vidfs" not in status else []
    header = (
        f"{opts.runs} run(s), median; RTT {opts.rtt_ms:g} ms ({server.delay});"
        f" {size / MiB:.0f} MiB random file,"
        f" {truth.movie_size / MB:.0f} MB MP4 (moov at the end); {opts.reads} random reads of"
        f" {opts.read_size // 1024} KiB"
    )
    print(f"\n{header}\n\n{text}\n")
    if any(summary[p].get("seq_partial") or summary[p].get("warm_partial") for p in summary):
        print(
            f"\\* read stopped after {opts.max_read_seconds:g} s (--max-read-seconds):"
            " the rate of what was read\n"
        )
    if goal_lines:
        print("vidfs against the targets:\n")
        for what, met, figures in goal_lines:
            mark = "met" if met else ("NOT met" if met is False else "n/a")
            print(f"- {what}: **{mark}** ({figures})")
        print()
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    out = opts.results_dir / f"bench-{stamp}{'-quick' if opts.quick else ''}.json"
    document = {
        "started": stamp,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "delay": server.delay,
        "proxy_check": check,
        "versions": versions(),
        "data": {
            "random": {"path": str(random_path), "size": size, "sha256": random_sha},
            "movie": {"path": str(movie_path), "size": truth.movie_size, "sha256": movie_sha},
        },
        "status": status,
        "summary": summary,
        "runs": {peer: [vars(f) for f in figs] for peer, figs in results.items()},
        "targets": [{"target": w, "met": m, "figures": f} for w, m, f in goal_lines],
        "table_markdown": text,
    }
    out.write_text(json.dumps(document, indent=1) + "\n")
    say(f"wrote {out}")
    wrong = [p for p in opts.peers if any(summary[p].get(k) is False for k in CHECKS)]
    if wrong:
        say(f"wrong bytes from: {', '.join(LABELS[p] for p in wrong)}")
    return 0


def _brief(fig: Figures) -> str:
    parts = [
        f"seq {_num(fig.seq_mbps)} MB/s",
        f"ffprobe {_num(fig.ffprobe_s, 2)} s/{_num(fig.ffprobe_requests, 0)} req/{_num(fig.ffprobe_mb)} MB",
        f"random p50 {_num(fig.rand_p50_ms)} ms ({_num(fig.rand_mb)} MB)",
        f"warm {_num(fig.warm_mbps)} MB/s",
        f"RSS {_num(fig.rss_mib)} MiB",
    ]
    if fig.errors:
        parts.append(f"errors: {'; '.join(fig.errors)}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
