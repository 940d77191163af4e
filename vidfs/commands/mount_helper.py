"""`mount.fuse.vidfs`: the mount(8) helper, so `mount -t fuse.vidfs` and /etc/fstab lines work.

The convention
--------------
For a file system type `fuse.vidfs`, mount(8) runs `/sbin/mount.fuse.vidfs` when it exists (it only looks
in /sbin, /sbin/fs.d and /sbin/fs; on merged-/usr systems /sbin is /usr/sbin). The package installs this
helper as the console script `mount.fuse.vidfs` next to `vidfs`; one symlink makes mount(8) find it::

    ln -s "$(command -v mount.fuse.vidfs)" /usr/sbin/mount.fuse.vidfs

Without that symlink mount(8) falls back to fuse3's generic `mount.fuse3`, which would run a program named
`vidfs` as `vidfs SOURCE MOUNTPOINT -o OPTIONS`, a form the `vidfs` command does not take. The generic
route still works by naming this helper in the source: `mount -t fuse 'mount.fuse.vidfs#CONFIG' DIR`
(mount.fuse3 then runs `mount.fuse.vidfs CONFIG DIR -o ...` from $PATH).

Invocation (what mount(8) passes)::

    mount.fuse.vidfs CONFIG MOUNTPOINT [-s] [-f] [-n] [-v] [-N NAMESPACE] [-o OPTION[,OPTION...]] [-t TYPE]

The helper translates the options, then runs `vidfs mount --daemon`, which returns once the mount answers
(mount(8) waits for the helper; the daemon keeps serving in its own session, logging to the cache dir or
to `log_file=`). `umount DIR` (or `fusermount3 -u DIR`) ends it.

Options
-------
- `allow_other`: let other users see the mount (non-root users need `user_allow_other` in /etc/fuse.conf).
- vidfs's own: `subtree=PATH` (mount one directory of the tree), `log_file=PATH`, `debug`, `fuse_debug`.
- Accepted and ignored: `ro` (vidfs is always read-only), `rw` (mount(8) passes it by default; the mount
  stays read-only), `defaults`, `auto`, `noauto`, `user`, `users`, `nouser`, `owner`, `group`, `_netdev`,
  `nofail`, `x-*` (e.g. x-systemd.automount), `comment=*`, the VFS flags vidfs sets itself or that mean
  nothing for it (`nosuid`, `nodev`, `noexec`, `suid`, `dev`, `exec`, `atime`, `noatime`, `relatime`,
  `nodiratime`, `strictatime`, `lazytime`, `sync`, `async`, `silent`, `loud`, `default_permissions`) and
  the FUSE naming options mount.fuse3 adds (`fsname=`, `subtype=`).
- Anything else is an error (exit 1), unless `-s` (sloppy) is given.

Exit status follows mount(8): 0 mounted, 1 bad invocation or options, 32 the mount failed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

EXIT_OK, EXIT_USAGE, EXIT_MOUNT_FAILURE = 0, 1, 32

IGNORED = frozenset(
    {
        "ro",
        "rw",
        "defaults",
        "auto",
        "noauto",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "_netdev",
        "nofail",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "nodiratime",
        "diratime",
        "strictatime",
        "nostrictatime",
        "lazytime",
        "nolazytime",
        "sync",
        "async",
        "silent",
        "loud",
        "default_permissions",
    }
)
IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")


class HelperUsage(Exception):
    pass


@dataclass
class Invocation:
    config: str
    mountpoint: str
    options: list[str] = field(default_factory=list)
    fake: bool = False
    verbose: bool = False
    sloppy: bool = False


def parse_args(argv: Sequence[str]) -> Invocation:
    positional: list[str] = []
    options: list[str] = []
    fake = verbose = sloppy = False
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-o", "-t", "-N") or (arg.startswith(("-o", "-t", "-N")) and len(arg) > 2):
            flag, value = arg[:2], arg[2:]
            if not value:
                index += 1
                if index >= len(args):
                    raise HelperUsage(f"{flag} needs a value")
                value = args[index]
            if flag == "-o":
                options.extend(o for o in value.split(",") if o)
            elif flag == "-N":
                raise HelperUsage("-N (mount in another namespace) is not supported")
            elif flag == "-t" and value not in ("fuse.vidfs", "vidfs", "fuse"):
                raise HelperUsage(f"this helper mounts fuse.vidfs, not {value}")
        elif arg.startswith("-") and len(arg) > 1 and arg != "--":
            for letter in arg[1:]:
                if letter == "f":
                    fake = True
                elif letter == "v":
                    verbose = True
                elif letter == "s":
                    sloppy = True
                elif letter in ("n", "i", "r", "w"):
                    pass  # no mtab / no further helpers / ro / rw: nothing to do for vidfs
                elif letter == "h":
                    raise HelperUsage("help")
                else:
                    raise HelperUsage(f"unknown flag -{letter}")
        elif arg != "--":
            positional.append(arg)
        index += 1
    if len(positional) != 2:
        raise HelperUsage("expected CONFIG MOUNTPOINT")
    return Invocation(positional[0], positional[1], options, fake, verbose, sloppy)


def mount_arguments(invocation: Invocation) -> list[str]:
    """The `vidfs mount --daemon ...` arguments for an invocation."""
    extra: list[str] = []
    for option in invocation.options:
        name, _, value = option.partition("=")
        if option in IGNORED or option.startswith(IGNORED_PREFIXES):
            continue
        if option == "allow_other":
            extra.append("--allow-other")
        elif name == "subtree" and value:
            extra += ["--subtree", value]
        elif name in ("log_file", "logfile") and value:
            extra += ["--log-file", value]
        elif option == "debug":
            extra.append("--debug")
        elif option == "fuse_debug":
            extra.append("--fuse-debug")
        elif option == "allow_root":
            raise HelperUsage("allow_root is not supported by vidfs; use allow_other")
        elif not invocation.sloppy:
            raise HelperUsage(f"unknown mount option {option!r}")
    if invocation.verbose and "--debug" not in extra:
        extra.append("-v")
    return ["mount", "--daemon", invocation.config, invocation.mountpoint, *extra]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        invocation = parse_args(args)
        command = mount_arguments(invocation)
    except HelperUsage as exc:
        if str(exc) != "help":
            print(f"mount.fuse.vidfs: {exc}", file=sys.stderr)
        print(
            "usage: mount.fuse.vidfs CONFIG MOUNTPOINT [-sfnv] [-o allow_other,subtree=PATH,log_file=PATH]",
            file=sys.stderr,
        )
        return EXIT_OK if str(exc) == "help" else EXIT_USAGE
    if invocation.verbose:
        print("mount.fuse.vidfs: vidfs " + " ".join(command), file=sys.stderr)
    if invocation.fake:
        return EXIT_OK
    from vidfs.cli import EXIT_USAGE as CLI_USAGE
    from vidfs.cli import main as vidfs_main

    code = vidfs_main(command)
    if code == 0:
        return EXIT_OK
    return EXIT_USAGE if code == CLI_USAGE else EXIT_MOUNT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
