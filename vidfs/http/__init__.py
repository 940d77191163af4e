"""HTTP for every provider and every range read.

client.py  the shared httpx client: per-origin limits, redirects followed by us (credentials stay on
           their origin), retries, TLS always verified
"""
