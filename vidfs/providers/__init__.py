"""Providers: one module per vendor API, behind the protocol in `base`."""
