"""HTTP for every provider and every range read.

policy.py  the one failure policy: status → exception table (API calls and storage), httpx exceptions
           mapped, `is_temp_failure`, `RetryPolicy` (jittered exponential backoff, Retry-After capped)
client.py  the shared httpx client: per-origin limits, redirects followed by us (credentials stay on
           their origin), retries through the policy, TLS always verified; `transport=` for tests
"""
