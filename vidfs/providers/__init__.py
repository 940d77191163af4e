"""Providers: one module per vendor API, behind the protocol in `base`.

Every module here with a `SPEC` is a provider (`registry` finds them); `base` (the protocol, `ProviderBase`),
`auth` (tokens, `TokenKeeper.call`, expiry of signed URLs) and `state` (small state files) are shared.
"""
