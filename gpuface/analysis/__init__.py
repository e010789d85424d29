"""Measurements over faces: per-frame region colour means (more analyses join here)."""
from .colour import COLOUR_SPACES, region_colour_means

__all__ = ["COLOUR_SPACES", "region_colour_means"]
