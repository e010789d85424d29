"""Measurements over faces: per-frame region colour means, sparse optical flow of landmarks."""
from .colour import COLOUR_SPACES, region_colour_means
from .flow import landmark_flow, lucas_kanade

__all__ = ["COLOUR_SPACES", "region_colour_means", "landmark_flow", "lucas_kanade"]
