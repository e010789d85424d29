"""The batched affect analyser: action units, emotions and valence/arousal for every face of a batch at once."""
from __future__ import annotations

import torch

from ..errors import InvalidOptionError
from ..types import Faces
from .aus import AU_THRESHOLD, blendshapes_to_aus
from .emotions import circumplex_valence_arousal, emotion_chips


class AffectAnalyzer:
    """Action units, 7 emotion probabilities and valence/arousal for all faces of a batch, on one device.

    - AUs: :func:`gpuface.affect.aus.blendshapes_to_aus` (the cited blendshape → FACS table).
    - Emotions: fer's mini-Xception (:class:`gpuface.models.mini_xception.MiniXception`, weights ``mini-xception``
      of the registry) on aligned 64×64 grey chips (:func:`gpuface.affect.emotions.emotion_chips`), all faces in
      one forward pass.
    - Valence/arousal: derived from the emotion probabilities on Russell's circumplex
      (:func:`gpuface.affect.emotions.circumplex_valence_arousal`), labelled as derived, not measured.

    Every face is processed independently of the others in its batch, so the outputs do not depend on the batch
    size (up to float32 rounding of batched convolutions, ≤ 1e-5 measured).

    Args:
        device: torch device for the models.
        au_threshold: intensity at which an AU counts as active (default :data:`gpuface.affect.aus.AU_THRESHOLD`).

    Example::

        lm = gf.FaceLandmarker(device="cuda"); affect = gf.AffectAnalyzer(device="cuda")
        faces = affect(batch.frames, lm(batch.frames, state))   # faces.aus (N, 22), emotions (N, 7), valence (N,)
    """

    def __init__(self, device: torch.device | str = "cpu", au_threshold: float = AU_THRESHOLD):
        from ..models.mini_xception import MiniXception
        from ..weights import load_state_dict

        if not 0 < au_threshold <= 1:
            raise InvalidOptionError(f"au_threshold must be in (0, 1], got {au_threshold}")
        self.device = torch.device(device)
        self.au_threshold = au_threshold
        self.emotion_net = MiniXception().eval()
        self.emotion_net.load_state_dict(load_state_dict("mini-xception"))
        self.emotion_net.to(self.device)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, faces: Faces) -> Faces:
        """Fill ``faces.aus`` (N, K), ``faces.emotions`` (N, 7), ``faces.valence`` and ``faces.arousal`` (N,).

        Args:
            frames: uint8 (B, 3, H, W) RGB, the batch the faces were found in.
            faces: with ``landmarks`` (N, 478, 3) and ``blendshapes`` (N, 52) (a
                :class:`~gpuface.landmarks.FaceLandmarker` with blendshapes on); N = 0 is fine.

        Returns:
            ``faces`` itself, its four affect fields set (float32, on ``self.device``).

        Raises:
            InvalidOptionError: the faces have no landmarks or no blendshapes.
        """
        if faces.landmarks is None or faces.blendshapes is None:
            raise InvalidOptionError("affect needs FaceMesh landmarks and blendshapes (FaceLandmarker(blendshapes=True))")
        faces.aus = blendshapes_to_aus(faces.blendshapes.to(self.device))
        chips = emotion_chips(frames.to(self.device), faces.landmarks.to(self.device), faces.frame.to(self.device))
        faces.emotions = self.emotion_net(chips)
        faces.valence, faces.arousal = circumplex_valence_arousal(faces.emotions)
        return faces


__all__ = ["AffectAnalyzer"]
