"""Sizes for the deploy modules that still import them from here; their home is
:mod:`ployz.transfer.units`, which parses and formats sizes and rates alike."""

from ployz.transfer.units import format_size, parse_size

__all__ = ["format_size", "parse_size"]
