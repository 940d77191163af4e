"""The read path: from a FUSE read to bytes.

readahead.py    per open file: sequential cursors with growing windows (what to fetch ahead)
block_cache.py  memory LRU → disk store → one shared ranged fetch per block (single flight)
store/          the disk store: persistent, size-capped, crash-safe, checked (extents in sparse files)
remote_file.py  one remote video's byte ranges, with a URL lease
range_reader.py ranged GETs that never return wrong bytes
leases.py       download URLs per video, renewed ahead of expiry
"""
