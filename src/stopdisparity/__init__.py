"""stopdisparity: racial disparities in police traffic stops, before and after a policy such as 287(g).

The flat public API lives in :mod:`stopdisparity.api` and is re-exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stopdisparity")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
