"""The listing path: what the vendors' catalogs contain, cached.

listings.py  the listing cache (TTL, single flight, stale served while a vendor is down)
probes.py    sizes the API does not tell, learned with a HEAD (bounded, cached per fingerprint)
naming.py    remote names → deterministic, safe file names
snapshot.py  listings and sizes persisted in the cache dir: a remount lists at once, offline too
extras.py    saved videos' xattr values, read back from the snapshot when asked instead of held
"""
