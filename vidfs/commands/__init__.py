"""One module per `vidfs` verb (mount, umount, demo, check, ls, stats, prefetch), each with `HELP`,
`add_arguments(parser)` and `run(args)`; `vidfs.cli` dispatches to them. `mount_helper` is mount(8)'s
`mount.fuse.vidfs`."""
