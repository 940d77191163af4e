"""The round-trip time: how the bench delays every packet in its namespace, and what it cost.

Three methods, tried in this order (`--delay auto`), the first that works is used and named in the table
and the JSON:

1. **netem** on the namespace's `lo` (RTT/2 per packet: a request and its answer each pass `lo` once).
   All in the kernel. Kernels built without `sch_netem` (the firecracker 6.x kernels of this machine
   class) refuse it.
2. **nfqueue**: `bench/nfq_delay.c`, built here with gcc against Debian's libnetfilter-queue, holds every
   TCP packet for RTT/2 behind one iptables rule `-t mangle -A PREROUTING -p tcp -j NFQUEUE`. Only the
   packet's metadata comes to userland and one batch verdict releases a run of packets, so it costs
   ~0.1 s of user CPU per GB (the kernel's own TCP receive work is charged to it too: the verdict call
   is where the packet continues up the stack). PREROUTING, not OUTPUT: on loopback the sender's socket
   lets go of a packet (skb_orphan) only at the device, and a packet held before that counts against
   TCP Small Queues, which then caps a stream at a few packets per RTT (25 MB/s instead of 150 at
   20 ms here). netem orphans the packets it holds for the same reason.
3. **proxy**: `bench/delay_proxy.py`, a splice-based TCP proxy in Python, the last resort (it burns CPU
   on the two cores the peers are measured on, and only delays the one port it fronts).

`--rtt-ms 0` means no delay at all: clients talk to nginx directly. Every method is checked by
measuring the RTT (the second request on one kept connection, with curl) before any figure is taken.
"""

from __future__ import annotations

import select
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH, MB, Cleanup, cpu_times, run, say, stop_pid
from bench.netns import Netns
from bench.tools import apt_install, ensure_binaries

QUEUE_NUMBER = 7
PROXY_PORT = 8080  # the delaying proxy in front of nginx (proxy method only)
CHECK_PROXY_PORT = 8079  # the same proxy with no delay: shows the proxy is not the bottleneck
NFQ_HEADER = Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h")


@dataclass
class Delay:
    """One RTT set up in the namespace; `port` is where clients reach the origin through it."""

    rtt_ms: float
    method: str  # "none", "netem", "nfqueue", "proxy"
    description: str
    port: int
    process: subprocess.Popen[Any] | None = None  # the delaying program, if any
    undo: Callable[[], None] = lambda: None
    measured_rtt_ms: float | None = None
    notes: list[str] = field(default_factory=list)  # why the better methods were not used

    def cpu(self) -> dict[str, float] | None:
        """User and system CPU seconds of the delaying program so far."""
        times = cpu_times(self.process.pid) if self.process else None
        return None if times is None else {"user_s": times[0], "system_s": times[1]}

    def close(self) -> None:
        self.undo()


def _measure_rtt(ns: Netns, url: str) -> float:
    """The median over 5 tries of a request's time on a kept connection (curl's second transfer)."""
    samples = []
    for _ in range(5):
        fmt = "%{time_pretransfer} %{time_starttransfer}\\n"
        to_null = ["-o", "/dev/null", "-o", "/dev/null"]  # one -o per URL
        result = run([*ns.prefix, "curl", "-s", *to_null, "-w", fmt, url, url], check=False)
        lines = result.stdout.split()
        if len(lines) == 4:
            samples.append((float(lines[3]) - float(lines[2])) * 1000)
    if not samples:
        raise RuntimeError(f"cannot reach {url} to measure the RTT")
    return statistics.median(samples)


def _netem(ns: Netns, rtt_ms: float, origin_port: int, cleanup: Cleanup) -> Delay | str:
    cmd = [*ns.prefix, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", f"{rtt_ms / 2:g}ms"]
    result = run(cmd, check=False)
    if result.returncode != 0:
        return f"netem: {result.stderr.strip() or result.returncode}"

    def remove() -> None:
        run([*ns.prefix, "tc", "qdisc", "del", "dev", "lo", "root"], check=False)

    undo = cleanup.push("netem", remove)
    return Delay(rtt_ms, "netem", f"netem on lo ({rtt_ms / 2:g} ms each way)", origin_port, undo=undo)


def build_nfq_delay(work: Path, install: bool) -> Path | str:
    """Compile bench/nfq_delay.c; returns the binary or why it could not be built."""
    wanted = {"gcc": "gcc", "iptables": "iptables"}
    missing = {b: why for b, why in ensure_binaries(wanted, install).items() if why}
    if not NFQ_HEADER.exists():
        if install:
            apt_install(["libnetfilter-queue-dev"])
        if not NFQ_HEADER.exists():
            missing["libnetfilter-queue-dev"] = "not installed"
    if missing:
        return "nfqueue: " + "; ".join(f"{k}: {v}" for k, v in missing.items())
    binary = work / "nfq_delay"
    cmd = ["gcc", "-O2", "-Wall", "-o", str(binary), str(BENCH / "nfq_delay.c")]
    result = run([*cmd, "-lnetfilter_queue", "-lnfnetlink"], check=False)
    if result.returncode != 0:
        return f"nfqueue: gcc failed: {result.stderr.strip()[-300:]}"
    return binary


def _wait_ready(process: subprocess.Popen[Any], timeout: float = 10.0) -> bool:
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    return bool(readable) and process.stdout.readline().strip() == b"ready"


def _iptables(ns: Netns, action: str) -> subprocess.CompletedProcess[str]:
    rule = [
        "-t",
        "mangle",
        action,
        "PREROUTING",
        "-p",
        "tcp",
        "-j",
        "NFQUEUE",
        "--queue-num",
        str(QUEUE_NUMBER),
    ]
    result = run([*ns.prefix, "iptables", "-w", *rule], check=False)
    if result.returncode != 0 and shutil.which("iptables-legacy"):
        result = run([*ns.prefix, "iptables-legacy", "-w", *rule], check=False)
    return result


def _nfqueue(
    ns: Netns, rtt_ms: float, origin_port: int, work: Path, cleanup: Cleanup, install: bool
) -> Delay | str:
    binary = build_nfq_delay(work, install)
    if isinstance(binary, str):
        return binary
    cmd = [*ns.prefix, str(binary), "--queue", str(QUEUE_NUMBER), "--delay-us", str(round(rtt_ms * 500))]
    with open(work / "nfq_delay.log", "ab") as log:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    stop = cleanup.push("nfq_delay", lambda: stop_pid(process))
    if not _wait_ready(process):
        stop()
        return f"nfqueue: nfq_delay did not start: {(work / 'nfq_delay.log').read_text()[-300:]}"
    assert process.stdout is not None
    process.stdout.close()  # it writes nothing more there
    result = _iptables(ns, "-A")
    if result.returncode != 0:
        stop()
        return f"nfqueue: iptables: {result.stderr.strip()[-300:]}"

    def delete_rule() -> None:
        _iptables(ns, "-D")

    unrule = cleanup.push("nfqueue rule", delete_rule)

    def undo() -> None:
        unrule()  # the rule first: with no listener the kernel would drop queued packets
        stop()

    description = f"NFQUEUE + bench/nfq_delay.c ({rtt_ms / 2:g} ms each way)"
    return Delay(rtt_ms, "nfqueue", description, origin_port, process=process, undo=undo)


def _proxy_process(ns: Netns, port: int, upstream: int, rtt_ms: float, work: Path, cleanup: Cleanup) -> Any:
    cmd = [sys.executable, str(BENCH / "delay_proxy.py"), "--listen", f"127.0.0.1:{port}"]
    cmd += ["--upstream", f"127.0.0.1:{upstream}", "--rtt-ms", f"{rtt_ms:g}"]
    process = ns.start(cmd, work / f"proxy-{port}.log", cleanup, f"proxy :{port}")
    ns.wait_url(f"http://127.0.0.1:{port}/", process, "delay proxy")
    return process


def _proxy(ns: Netns, rtt_ms: float, origin_port: int, work: Path, cleanup: Cleanup) -> Delay:
    process = _proxy_process(ns, PROXY_PORT, origin_port, rtt_ms, work, cleanup)
    check = _proxy_process(ns, CHECK_PROXY_PORT, origin_port, 0.0, work, cleanup)
    description = f"bench/delay_proxy.py ({rtt_ms / 2:g} ms each way)"

    def undo() -> None:
        stop_pid(process)
        stop_pid(check)

    return Delay(rtt_ms, "proxy", description, PROXY_PORT, process=process, undo=undo)


def proxy_check(ns: Netns, delay: Delay, origin_port: int, name: str) -> dict[str, float] | None:
    """curl straight to nginx vs through the proxy without delay: the proxy must not be what limits."""
    if delay.method != "proxy":
        return None
    out: dict[str, float] = {}
    for label, port in (("direct", origin_port), ("proxy_0ms", CHECK_PROXY_PORT), ("proxy_rtt", PROXY_PORT)):
        cmd = [*ns.prefix, "curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}"]
        result = run([*cmd, f"http://127.0.0.1:{port}/{name}"], timeout=900, check=False)
        out[label + "_mbps"] = float(result.stdout or 0) / MB
    return out


def start_delay(
    ns: Netns,
    rtt_ms: float,
    method: str,
    origin_port: int,
    work: Path,
    cleanup: Cleanup,
    install: bool,
    *,
    allow_proxy: bool = True,
) -> Delay:
    """Set up `rtt_ms` of RTT with `method` ("auto": the first of netem, nfqueue, proxy that works;
    not the proxy unless `allow_proxy`: it delays only the one port it fronts)."""
    if rtt_ms <= 0:
        measured = _measure_rtt(ns, f"http://127.0.0.1:{origin_port}/")
        return Delay(0.0, "none", "no delay (0 ms)", origin_port, measured_rtt_ms=measured)
    notes: list[str] = []
    chosen: Delay | str | None = None
    for candidate in ("netem", "nfqueue", "proxy"):
        if method not in ("auto", candidate) or (candidate == "proxy" and not allow_proxy):
            continue
        if candidate == "netem":
            chosen = _netem(ns, rtt_ms, origin_port, cleanup)
        elif candidate == "nfqueue":
            chosen = _nfqueue(ns, rtt_ms, origin_port, work, cleanup, install)
        else:
            chosen = _proxy(ns, rtt_ms, origin_port, work, cleanup)
        if isinstance(chosen, Delay):
            chosen.measured_rtt_ms = _measure_rtt(ns, f"http://127.0.0.1:{chosen.port}/")
            if chosen.measured_rtt_ms >= 0.8 * rtt_ms:
                break
            chosen.close()
            chosen = f"{candidate}: measured RTT {chosen.measured_rtt_ms:.1f} ms, not {rtt_ms:g} ms"
        notes.append(chosen)
        say(f"delay method not usable: {chosen}")
    if not isinstance(chosen, Delay):
        raise RuntimeError(f"no way to delay packets: {'; '.join(notes)}")
    chosen.notes = notes
    return chosen
