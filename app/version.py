"""optaas's version: the installed distribution's (pyproject.toml), written down once."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("optaas")
except PackageNotFoundError:  # a source tree run without installing (PYTHONPATH)
    VERSION = "0+unknown"
