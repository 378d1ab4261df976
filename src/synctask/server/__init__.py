"""Daemon mode: ``synctask serve`` runs plans for as long as it lives, controlled over HTTP."""

from .api import make_app

__all__ = ["make_app"]
