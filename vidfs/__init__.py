"""vidfs: a read-only FUSE filesystem for remote video catalogs."""

__version__ = "0.1.0"
