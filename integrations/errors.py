"""The one base class of every adapter's errors, so that a retry policy can ask any of them whether to retry."""

from __future__ import annotations


class AdapterError(RuntimeError):
    """A call to an external system failed; `transient` says whether retrying can help (outage, timeout, 5xx)."""

    transient: bool = False


class SettingsError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""
