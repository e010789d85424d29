"""The batched affect analyser: action units, emotions and valence/arousal for every face of a batch at once."""
from __future__ import annotations

from dataclasses import replace

import torch

from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.core.types import Faces
from gpuface.stages.affect.aus import AU_NAMES, AU_THRESHOLD, blendshapes_to_aus
from gpuface.stages.affect.emotions import EMOTIONS, circumplex_valence_arousal, emotion_chips, imagenet_chips


class AffectAnalyzer:
    """Action units, 7 emotion probabilities and valence/arousal for all faces of a batch, on one device.

    - AUs: :func:`gpuface.stages.affect.aus.blendshapes_to_aus` (the cited blendshape → FACS table), or with
      ``au_model="opengraphau"`` OpenGraphAU's network (online weights) on aligned 224² RGB chips.
    - Emotions: fer's mini-Xception (:class:`gpuface.models.mini_xception.MiniXception`, weights ``mini-xception``
      of the registry) on aligned 64×64 grey chips (:func:`gpuface.stages.affect.emotions.emotion_chips`), all faces in
      one forward pass.
    - Valence/arousal: derived from the emotion probabilities on Russell's circumplex
      (:func:`gpuface.stages.affect.emotions.circumplex_valence_arousal`), labelled as derived, not measured.
    - ``emotion_model="hsemotion"`` (online weights, :mod:`gpuface.models.online`): HSEmotion's EfficientNet-B0
      on aligned 224² RGB chips gives the emotions (its contempt class dropped and the other 7 renormalised, to
      keep py-feat's 7 columns) and *measured* valence/arousal from its regression heads.

    Every face is processed independently of the others in its batch, so the outputs do not depend on the batch
    size (up to float32 rounding of batched convolutions, ≤ 1e-5 measured).

    Args:
        device: torch device for the models.
        au_threshold: intensity at which an AU counts as active (default: :data:`gpuface.stages.affect.aus.AU_THRESHOLD`
            for blendshapes, OpenGraphAU's 0.5 for opengraphau).
        au_model: ``blendshapes`` (offline, default: :data:`gpuface.stages.affect.aus.AU_TABLE`, 22 AUs) or
            ``opengraphau`` (online weights: OpenGraphAU's 41 AUs, :data:`gpuface.models.opengraphau.OPENGRAPHAU_AUS`;
            ``self.au_names`` says which).
        emotion_model: ``mini-xception`` (offline, default) or ``hsemotion`` (online weights).
        weights: ``{model name: local file}`` for online models (``--weights NAME=PATH``).

    Raises:
        InvalidOptionError: bad threshold or model name. WeightsError: online weights not available (one line
        saying what to download and where to put it).

    Example::

        lm = gf.FaceLandmarker(device="cuda"); affect = gf.AffectAnalyzer(device="cuda")
        faces = affect(batch.frames, lm(batch.frames, state))   # faces.aus (N, 22), emotions (N, 7), valence (N,)
    """

    def __init__(self, device: torch.device | str = "cpu", au_threshold: float | None = None,
                 emotion_model: str = "mini-xception", weights: dict[str, str] | None = None,
                 au_model: str = "blendshapes"):
        if au_model not in ("blendshapes", "opengraphau"):
            raise InvalidOptionError(f"au_model must be blendshapes or opengraphau, got {au_model!r}")
        if au_threshold is None:
            au_threshold = AU_THRESHOLD if au_model == "blendshapes" else 0.5
        if not 0 < au_threshold <= 1:
            raise InvalidOptionError(f"au_threshold must be in (0, 1], got {au_threshold}")
        if emotion_model not in ("mini-xception", "hsemotion"):
            raise InvalidOptionError(f"emotion_model must be mini-xception or hsemotion, got {emotion_model!r}")
        self.device = resolve_device(device)
        self.au_threshold = au_threshold
        self.emotion_model, self.au_model = emotion_model, au_model
        self.au_names = AU_NAMES
        self.au_net = None
        if au_model == "opengraphau":
            from gpuface.models.opengraphau import OPENGRAPHAU_AUS
            from gpuface.models.online import online_weights_file, load_opengraphau
            self.au_net = load_opengraphau(online_weights_file("opengraphau", (weights or {}).get("opengraphau")))
            self.au_net.to(self.device)
            self.au_names = OPENGRAPHAU_AUS
        if emotion_model == "hsemotion":
            from gpuface.models.online import HSEmotionNet, online_weights_file
            path = online_weights_file("hsemotion", (weights or {}).get("hsemotion"))
            self.emotion_net = HSEmotionNet.from_file(path)
        else:
            from gpuface.models.mini_xception import MiniXception
            from gpuface.models.weights import load_state_dict
            self.emotion_net = MiniXception().eval()
            self.emotion_net.load_state_dict(load_state_dict("mini-xception"))
        self.emotion_net.to(self.device)

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, faces: Faces) -> Faces:
        """A new :class:`Faces`: ``faces`` with ``aus`` (N, K), ``emotions`` (N, 7), ``valence`` and ``arousal`` (N,)
        set; ``faces`` itself is not changed.

        Args:
            frames: uint8 (B, 3, H, W) RGB, the batch the faces were found in.
            faces: with ``landmarks`` (N, 478, 3) and ``blendshapes`` (N, 52) (a
                :class:`~gpuface.stages.landmarks.FaceLandmarker` with blendshapes on); N = 0 is fine.

        Returns:
            The new faces, their four affect fields float32 on ``self.device``.

        Raises:
            InvalidOptionError: the faces have no landmarks or no blendshapes.
        """
        if faces.landmarks is None or faces.blendshapes is None:
            raise InvalidOptionError("affect needs FaceMesh landmarks and blendshapes "
                                     "(FaceLandmarker(blendshapes=True))")
        frames, landmarks, rows = frames.to(self.device), faces.landmarks.to(self.device), faces.row.to(self.device)
        rgb = None   # the 224² ImageNet chips, cut once for OpenGraphAU and HSEmotion alike
        if self.au_net is not None or self.emotion_model == "hsemotion":
            rgb = imagenet_chips(frames, landmarks, rows)
        if self.au_net is not None:
            aus = self.au_net(rgb)
        else:
            aus = blendshapes_to_aus(faces.blendshapes.to(self.device))
        if self.emotion_model == "hsemotion":
            from gpuface.models.online import HSEMOTION_CLASSES
            probs, valence, arousal = self.emotion_net(rgb)
            seven = probs[:, [HSEMOTION_CLASSES.index(e) for e in EMOTIONS]]
            emotions = seven / seven.sum(1, keepdim=True)
        else:
            emotions = self.emotion_net(emotion_chips(frames, landmarks, rows))
            valence, arousal = circumplex_valence_arousal(emotions)
        return replace(faces, aus=aus, emotions=emotions, valence=valence, arousal=arousal)


__all__ = ["AffectAnalyzer"]
