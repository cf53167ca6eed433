"""The web console (``pystream console``, or ``console.enable`` in ``pystream serve``): a
client of the cluster through :mod:`pystream.aio`, never the broker.  Server-side Jinja2
pages (overview, topics, messages, consumer groups) and live charts drawn with the
vendored uPlot from JSON the console serves (scraped from each broker's ``/metrics``)."""

from .app import create_app
from .config import ConsoleConfig

__all__ = ["ConsoleConfig", "create_app"]
