"""Abstractions: All-Pairs, Map, Wavefront and Classify."""

from .allpairs import AllPairs, allpairs
from .base import Grid
from .classify import Classify, classify
from .compose import Lazy
from .map import Map, map  # noqa: A004
from .wavefront import Wavefront, wavefront

__all__ = ["AllPairs", "Classify", "classify", "Grid", "Lazy", "Map", "Wavefront", "allpairs", "map", "wavefront"]
