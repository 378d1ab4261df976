"""Vendor adapters: build a request from a task, turn the answer into rows or a failure, and read
the vendor's rate-limit headers. Each connector translates the vendor's own failures into our
outcome kinds at this boundary (see ``synctask.errors``)."""

from .base import Connector, Observation, Request, Response
from .binance import BinanceConnector
from .rest import RestConnector
from .tushare import TushareConnector

__all__ = ["Connector", "Observation", "Request", "Response", "BinanceConnector", "RestConnector", "TushareConnector",
           "CONNECTORS"]

CONNECTORS: dict[str, type[TushareConnector] | type[BinanceConnector] | type[RestConnector]] = {
    "tushare": TushareConnector,
    "binance": BinanceConnector,
    "rest": RestConnector,
}
