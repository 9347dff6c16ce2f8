"""Abstractions over sets of elements: All-Pairs and Map (Wavefront, Classify to come)."""

from .allpairs import AllPairs, allpairs
from .base import Grid
from .map import Map, map  # noqa: A004

__all__ = ["AllPairs", "Grid", "Map", "allpairs", "map"]
