"""Measurements over faces: per-frame region colour means, sparse (landmarks) and dense optical flow, shot cuts."""
from gpuface.ops.analysis.colour import COLOUR_SPACES, region_colour_means
from gpuface.ops.analysis.shots import shot_cuts
from gpuface.ops.analysis.flow import (CORNERS, FARNEBACK, dense_flow, dense_flow_summary, draw_flow,
                                       farneback_flow, flow_to_rgb, landmark_flow, lucas_kanade, shi_tomasi_corners,
                                       track_points)

__all__ = ["COLOUR_SPACES", "region_colour_means", "landmark_flow", "lucas_kanade", "dense_flow",
           "dense_flow_summary", "flow_to_rgb", "draw_flow", "shot_cuts", "farneback_flow", "FARNEBACK",
           "CORNERS", "shi_tomasi_corners", "track_points"]
