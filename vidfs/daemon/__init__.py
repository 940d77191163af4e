"""A running mount: `mount.serve()` builds the engine, the caches and the FUSE layer and runs them until an
unmount or a signal; `control.py` is its private control socket (stats, pins)."""
