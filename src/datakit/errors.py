"""Exception hierarchy: every error a user can see is a DatakitError with a message that names
the file, row, key or environment variable involved. The CLI turns them into exit code 1."""

from __future__ import annotations


class DatakitError(Exception):
    """Base class for errors datakit reports to the user (one clear line, non-zero exit)."""


class ParamsError(DatakitError, ValueError):
    """params.yaml or a CLI option is invalid; the message names the key and what is allowed."""


class ManifestError(DatakitError, ValueError):
    """A manifest or failures table is missing, corrupt or inconsistent; names file and rows."""


class ProviderError(DatakitError):
    """A search provider answered in a way that stops the run (bad key, quota, garbage)."""


class LockedError(DatakitError):
    """Another datakit process holds the output folder."""


class StoreError(DatakitError):
    """The image store cannot be written (disk full, symlink planted, no locking)."""
