"""Many machines: the worker pool on Ray actors (``synctask run --ray``); Ray is optional."""

from .ray_pool import RayRunner, RemoteFailure, ray_available

__all__ = ["RayRunner", "RemoteFailure", "ray_available"]
