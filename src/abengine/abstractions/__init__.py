"""Abstractions: All-Pairs, Map and Classify (Wavefront to come)."""

from .allpairs import AllPairs, allpairs
from .base import Grid
from .classify import Classify, classify
from .map import Map, map  # noqa: A004

__all__ = ["AllPairs", "Classify", "classify", "Grid", "Map", "allpairs", "map"]
