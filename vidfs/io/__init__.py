"""The read path: range reads, the block cache, prefetch, the disk store."""
