"""Converters and transform chains for a task, from the worker's and connector's
settings (the finding is :mod:`pystream.connect.plugins`' job)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import Converter
from ..plugins import load_connector, load_converter, plugin_infos
from ..transforms import TransformationChain

__all__ = ["load_connector", "make_converter", "make_transforms", "plugin_infos"]


def make_converter(name: str, settings: Mapping[str, Any], is_key: bool) -> Converter:
    """A configured converter (``key.converter``/``value.converter``/``header.converter``
    and their ``.*`` settings)."""
    converter = load_converter(name)()
    converter.configure(dict(settings), is_key)
    return converter


def make_transforms(props: Mapping[str, str]) -> TransformationChain:
    """The ``transforms=``/``predicates=`` chain of a connector's config."""
    return TransformationChain.from_config(props)
