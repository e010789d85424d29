"""Manipulations: functions over whole batches of frames (B, 3, H, W)."""
from .anonymize import MODES, AnonymizeOptions, anonymize, face_masks

__all__ = ["MODES", "AnonymizeOptions", "anonymize", "face_masks"]
