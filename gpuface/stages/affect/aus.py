"""FACS action units from MediaPipe's 52 blendshapes: a documented mapping table, computed for all faces at once.

Every row of :data:`AU_TABLE` names the FACS action unit (Ekman, Friesen & Hager 2002, *Facial Action Coding
System*), the ARKit/MediaPipe blendshapes that express it and the source of the correspondence:

- ``pyfeat``: py-feat 2.1.5 ``feat/resources/blendshape_region_map.json`` (blendshape → AU per muscle; it cites
  FACS, melindaozel.com's *ARKit to FACS cheat sheet* and the ARKit-52 anatomy guide of pooyadeperson.com).
- ``arkit-facs``: the same ARKit-to-FACS cheat sheet (M. Ozel), for blendshapes py-feat's table leaves out
  (``mouthPress`` = lip pressor AU24, ``mouthRoll`` = lip suck AU28).
- ``derived``: AU25 (lips part) is ``jawOpen − mouthClose``: Apple's ARKit reference defines ``mouthClose`` as the
  closure of the lips independent of jaw position, so the difference is the lip aperture that jaw opening leaves.
  Lips parted by AU10 + AU16 alone, with the jaw closed, are not seen.

py-feat's map gives eyeBlink as AU45 (blink); a single frame can only show the eye closed, FACS AU43, which is
also py-feat's Detector column name, so the row is named AU43 in the table; the facetorch analyser's outputs (JSON,
AU timeline) call it AU45, "Blink", as that analyser does (:data:`FACETORCH_AU_NAMES`).

Bilateral blendshapes (Left/Right, the subject's sides) are combined with the maximum: FACS scores an AU that
occurs on one side (unilateral) as present. Intensities stay in the blendshapes' [0, 1] range. An AU is
*active* when its intensity is ≥ :data:`AU_THRESHOLD` (0.25, a "trace" level on the coefficient scale chosen
from the range of the blendshapes on neutral and posed faces; blendshape coefficients are not probabilities).

How well: this is **not validated against human FACS coders**. No peer-reviewed validation of blendshapes as AU
estimators exists; py-feat reports out-of-sample R² 0.236 for its own blendshape→AU regression against its
XGBoost AU outputs. On py-feat's posed-expression photographs (``tests/test_affect.py``) the prototype AUs
1, 2, 26 (surprise), 12 (happiness) and 4, 7 (anger) come out; AU05 (eyeWide ≤ 0.05 on a wide-eyed surprise),
AU06 (MediaPipe's cheekSquint stays ≈ 0 on every face seen) and AU09/AU10 of disgust (noseSneer, mouthUpperUp ≈ 0)
do not: treat AU05, AU06 and AU09 from blendshapes as unreliable. The alternative, inverting py-feat's
AU→mesh linear model (``au_to_mesh_pls_v4``) by bounded least squares on the aligned 478-point mesh, was evaluated
on the same photographs (``benchmarks/affect_au_sources.py``): it finds more prototype AUs (8/12 vs 6/11, AU06
included) but activates 35 % of the other AUs (blendshapes: 12 %); balanced accuracy 0.66 vs 0.71, so the
blendshape table is kept.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from gpuface.models.facemesh import BLENDSHAPE_NAMES


@dataclass(frozen=True)
class AURule:
    """One row of the mapping: ``intensity = clamp(max(bs[plus]) − max(bs[minus], 0), 0, 1)``."""

    au: str
    name: str
    plus: tuple[str, ...]
    source: str
    minus: tuple[str, ...] = ()


def _lr(stem: str) -> tuple[str, str]:
    return f"{stem}Left", f"{stem}Right"


#: The mapping table (FACS names from Ekman, Friesen & Hager 2002).
AU_TABLE: tuple[AURule, ...] = (
    AURule("AU01", "Inner brow raiser", ("browInnerUp",), "pyfeat"),
    AURule("AU02", "Outer brow raiser", _lr("browOuterUp"), "pyfeat"),
    AURule("AU04", "Brow lowerer", _lr("browDown"), "pyfeat"),
    AURule("AU05", "Upper lid raiser", _lr("eyeWide"), "pyfeat"),
    AURule("AU06", "Cheek raiser", _lr("cheekSquint"), "pyfeat"),
    AURule("AU07", "Lid tightener", _lr("eyeSquint"), "pyfeat"),
    AURule("AU09", "Nose wrinkler", _lr("noseSneer"), "pyfeat"),
    AURule("AU10", "Upper lip raiser", _lr("mouthUpperUp"), "pyfeat"),
    AURule("AU12", "Lip corner puller", _lr("mouthSmile"), "pyfeat"),
    AURule("AU14", "Dimpler", _lr("mouthDimple"), "pyfeat"),
    AURule("AU15", "Lip corner depressor", _lr("mouthFrown"), "pyfeat"),
    AURule("AU16", "Lower lip depressor", _lr("mouthLowerDown"), "pyfeat"),
    AURule("AU17", "Chin raiser", ("mouthShrugLower", "mouthShrugUpper"), "pyfeat"),
    AURule("AU18", "Lip pucker", ("mouthPucker",), "pyfeat"),
    AURule("AU20", "Lip stretcher", _lr("mouthStretch"), "pyfeat"),
    AURule("AU22", "Lip funneler", ("mouthFunnel",), "pyfeat"),
    AURule("AU24", "Lip pressor", _lr("mouthPress"), "arkit-facs"),
    AURule("AU25", "Lips part", ("jawOpen",), "derived", minus=("mouthClose",)),
    AURule("AU26", "Jaw drop", ("jawOpen",), "pyfeat"),
    AURule("AU28", "Lip suck", ("mouthRollLower", "mouthRollUpper"), "arkit-facs"),
    AURule("AU43", "Eyes closed", _lr("eyeBlink"), "pyfeat"),
    AURule("AD34", "Puff", ("cheekPuff",), "pyfeat"),
)

#: AU column names in output order.
AU_NAMES: tuple[str, ...] = tuple(r.au for r in AU_TABLE)
#: FACS names by AU code.
AU_DESCRIPTIONS: dict[str, str] = {r.au: r.name for r in AU_TABLE}
#: Default intensity at which an AU counts as active.
AU_THRESHOLD = 0.25
#: FACS names of every AU code an AU source here reports (Ekman, Friesen & Hager 2002).
FACS_NAMES = {**AU_DESCRIPTIONS, "AU11": "Nasolabial deepener", "AU13": "Sharp lip puller", "AU19": "Tongue show",
              "AU23": "Lip tightener", "AU27": "Mouth stretch", "AU32": "Lip bite", "AU38": "Nostril dilator",
              "AU39": "Nostril compressor", "AU45": "Blink"}


#: Muscular basis of each AU (Ekman, Friesen & Hager 2002, FACS Manual; the facetorch analyser's "Muscle Movement"
#: column names the same muscles more briefly). Action descriptors (AD34) and AU19/AU32 have none.
FACS_MUSCLES = {
    "AU01": "Frontalis, pars medialis", "AU02": "Frontalis, pars lateralis",
    "AU04": "Corrugator supercilii, depressor supercilii, procerus", "AU05": "Levator palpebrae superioris",
    "AU06": "Orbicularis oculi, pars orbitalis", "AU07": "Orbicularis oculi, pars palpebralis",
    "AU09": "Levator labii superioris alaeque nasi", "AU10": "Levator labii superioris",
    "AU11": "Zygomaticus minor", "AU12": "Zygomaticus major", "AU13": "Levator anguli oris (caninus)",
    "AU14": "Buccinator", "AU15": "Depressor anguli oris (triangularis)", "AU16": "Depressor labii inferioris",
    "AU17": "Mentalis", "AU18": "Incisivii labii superioris and inferioris", "AU20": "Risorius, platysma",
    "AU22": "Orbicularis oris", "AU23": "Orbicularis oris", "AU24": "Orbicularis oris",
    "AU25": "Depressor labii inferioris; relaxation of mentalis or orbicularis oris",
    "AU26": "Masseter; relaxed temporalis and internal pterygoid", "AU27": "Pterygoids, digastric",
    "AU28": "Orbicularis oris", "AU38": "Nasalis, pars alaris",
    "AU39": "Nasalis, pars transversa; depressor septi nasi",
    "AU43": "Relaxation of levator palpebrae superioris; orbicularis oculi, pars palpebralis",
    "AU45": "Relaxation of levator palpebrae superioris; orbicularis oculi, pars palpebralis",
}

#: The facetorch analyser's names where ours differ: it calls the closed eye AU45, "Blink" (its FACS dictionary;
#: py-feat's AU→blendshape map also names eyeBlink AU45). Our table keeps py-feat's Detector column AU43.
FACETORCH_AU_NAMES = {"AU43": "AU45"}


def au_muscle(code: str) -> str:
    """The muscles of an AU column (``AU12``; ``AUL12``/``AUR12``: the same muscle on one side), or ''."""
    return FACS_MUSCLES.get(code[:2] + code[-2:], "")


def au_description(code: str) -> str:
    """FACS name of an AU column (``AU12``; ``AUL12``/``AUR12`` for the subject's left/right side)."""
    side = {"L": "left ", "R": "right "}.get(code[2:3], "")
    return side + FACS_NAMES.get(code[:2] + code[-2:], code) if side else FACS_NAMES.get(code, code)


def au_columns(columns) -> list[str]:
    """The AU intensity columns of an affect table (those with an ``<AU>_active`` partner), in table order."""
    cols = list(columns)
    return [c for c in cols if re.fullmatch(r"A[UD][LR]?\d\d", c) and f"{c}_active" in cols]


def _index(names_per_rule: list[tuple[str, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, M) blendshape indices (padded by repetition) and a (K,) flag of rows that have any."""
    width = max(max(len(n) for n in names_per_rule), 1)
    idx, has = [], []
    for names in names_per_rule:
        ids = [BLENDSHAPE_NAMES.index(n) for n in names] or [0]
        idx.append(ids + [ids[-1]] * (width - len(ids)))
        has.append(bool(names))
    return torch.tensor(idx, device="cpu"), torch.tensor(has, device="cpu")  # never the default device


_PLUS, _ = _index([r.plus for r in AU_TABLE])
_MINUS, _HAS_MINUS = _index([r.minus for r in AU_TABLE])


def blendshapes_to_aus(blendshapes: torch.Tensor) -> torch.Tensor:
    """Action-unit intensities of every face from its blendshapes (:data:`AU_TABLE`), in tensor ops.

    Args:
        blendshapes: float (N, 52) MediaPipe blendshape coefficients in [0, 1], ordered as
            :data:`gpuface.models.facemesh.BLENDSHAPE_NAMES`, on any device.

    Returns:
        float32 (N, K) intensities in [0, 1], columns :data:`AU_NAMES` (K = 22), on the input's device.

    Raises:
        ValueError: ``blendshapes`` is not (N, 52).
    """
    if blendshapes.dim() != 2 or blendshapes.shape[1] != len(BLENDSHAPE_NAMES):
        raise ValueError(f"blendshapes must be (N, {len(BLENDSHAPE_NAMES)}), got {tuple(blendshapes.shape)}")
    bs = blendshapes.float()
    plus = bs[:, _PLUS.to(bs.device)].amax(-1)
    minus = bs[:, _MINUS.to(bs.device)].amax(-1) * _HAS_MINUS.to(bs.device)
    return (plus - minus).clamp_(0, 1)


__all__ = ["AURule", "AU_TABLE", "AU_NAMES", "AU_DESCRIPTIONS", "AU_THRESHOLD", "FACS_NAMES", "FACS_MUSCLES",
           "FACETORCH_AU_NAMES", "au_description", "au_muscle", "au_columns", "blendshapes_to_aus"]
