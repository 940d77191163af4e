"""The config file: TOML → frozen dataclasses, with errors that name the file, the table and the key.

    types.py    the values (Config, CacheOptions, HttpSettings, ProviderConfig, Secret): a leaf module
    units.py    sizes ("256MiB"), durations ("5m") and how values are shown in messages
    secrets.py  `{ env | file | credential }` secrets and file-permission warnings
    loader.py   load_config(): reads, validates, fills defaults; provider tables by their ProviderSpec

Nothing is imported here, so that importing `vidfs.config.types` stays free of the loader (which looks up
the provider modules) and of import cycles.
"""
