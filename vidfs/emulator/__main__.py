"""``python -m vidfs.emulator``: run vendor emulators until SIGINT/SIGTERM.

After every site listens, ONE JSON line goes to stdout (and, atomically, to ``--ready-file``)::

    {"pixop": {"url": "http://127.0.0.1:PORT", "control_url": "http://127.0.0.1:PORT/_emulator",
               "config": {"type": "pixop", "base_url": "http://127.0.0.1:PORT",
                          "email": "demo@example.com", "password": "..."}}}

``config`` is the provider's table for vidfs's TOML config. Progress (media generation) goes to stderr.

``--scale 100000`` gives every provider that many synthetic videos (``--set valt.scale=100000`` one
provider only); the control API changes it at runtime (``POST <control_url>/settings {"scale": N}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vidfs.emulator import known_emulators
from vidfs.emulator.server import EmulatorOptions, Site, SiteGroup, create_site


def _setting(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _settings_for(provider: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = known_emulators()
    for key, value in pairs:
        scope, dot, rest = key.partition(".")
        if dot and scope in names:
            if scope == provider:
                out[rest] = value
        else:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vidfs.emulator", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--provider",
        action="append",
        choices=known_emulators(),
        help="emulator to run (repeatable; default: every one found in vidfs.emulator)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=0, help="port of the first site, next ones +1 (default 0: ephemeral)"
    )
    p.add_argument("--jwt-lifetime", type=int, help="seconds a token lives (pixop default 900)")
    p.add_argument("--page-size", type=int, help="default page size of list endpoints (pixop default 2)")
    p.add_argument(
        "--media-dir", type=Path, help="sample media cache (default $VIDFS_MEDIA_DIR or XDG cache)"
    )
    p.add_argument("--catalog", choices=("small", "big"), default="small", help="sample catalog size")
    p.add_argument("--videos-per-project", type=int, help="videos per synthetic project with --catalog big")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument(
        "--scale",
        type=int,
        metavar="N",
        help="add N synthetic videos (a few KiB each, made in memory) to every provider's catalog, spread "
        "as that vendor's accounts grow; PROVIDER.scale=N with --set for one provider",
    )
    p.add_argument(
        "--set",
        dest="settings",
        action="append",
        type=_setting,
        default=[],
        metavar="KEY=VALUE",
        help="emulator setting, as POST /_emulator/settings would (value parsed as JSON if it can be); "
        "PROVIDER.KEY=VALUE sets it for one provider only",
    )
    p.add_argument("--ready-file", type=Path, help="also write the ready JSON line to this file (atomically)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    return p


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="vidfs-emulator: %(message)s")
    providers = args.provider or known_emulators()
    # The signals received. A plain list, not a threading.Event: a handler runs in the main thread between
    # two bytecodes, and `Event.set` there deadlocked when the signal landed while `Event.wait` held the
    # event's lock (seen: a SIGTERM, then SIGINTs, never ended an emulator; tests waited 15 s to SIGKILL).
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    sites: dict[str, Site] = {}
    group = SiteGroup(sites)
    try:
        for i, name in enumerate(dict.fromkeys(providers)):
            options = EmulatorOptions(
                host=args.host,
                port=args.port + i if args.port else 0,
                media_dir=args.media_dir,
                page_size=args.page_size,
                jwt_lifetime=args.jwt_lifetime,
                catalog=args.catalog,
                videos_per_project=args.videos_per_project,
                seed=args.seed,
                scale=args.scale,
                settings=_settings_for(name, args.settings),
                verbose=args.verbose,
            )
            group.sites[name] = create_site(name, options)
            if stopping:
                return 130
        for site in group:
            site.start()
        line = json.dumps(group.info(), ensure_ascii=False)
        if args.ready_file:
            _write_atomically(args.ready_file, line + "\n")
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        for name, site in group.sites.items():
            logging.info("%s listening on %s", name, site.url)
        while not stopping:  # until a signal (a sleep goes on after its handler: PEP 475), seen within 0.5 s
            time.sleep(0.5)
        logging.info("stopping")
        return 0
    except (ValueError, KeyError, OSError, RuntimeError) as exc:
        logging.error("%s", exc)
        return 1
    finally:
        group.close()


if __name__ == "__main__":
    sys.exit(main())
