"""FaceLandmarker: batched, tracked FaceMesh v2 (478 landmarks + presence) and blendshapes for video.

What MediaPipe's FaceLandmarker does (``face_landmarker_graph.cc``), for a whole batch of frames at once:

1. **ROI from a detection**: the detection box centre, rotated so the eye line (keypoints 0 → 1) is
   horizontal, side = 1.5 × the longer box side (``RectTransformationCalculator`` scale 1.5, ``square_long``).
2. **ROI from landmarks** (tracking): centre and size of the landmarks' bounding box, rotation from points
   33 → 263 (the outer eye corners), side 1.5 × the longer side.
3. Crops of every face of every frame in one affine ``grid_sample`` (256², pixels in [0, 1], zero border), one
   FaceMesh forward pass, points mapped back to frame pixels with the inverse affine, presence = sigmoid of
   the face flag; blendshapes from 146 of the 478 points, one pass.

Tracking across a batch, without a Python loop over frames: the tracks known at the start of a batch (from the
previous batch's last landmarks, or from a detection on the batch's first frame) give the ROIs of the batch's
key frames (every ``keyframe_step``-th frame and the last); the frames between start from ROIs interpolated
between their two key frames' landmarks. Any frame whose own landmarks give an ROI that moved by more than
``refine_tolerance`` (centre shift or size change as a fraction of the side, or rotation in radians) runs
again from that ROI, so every face ends up landmarked from an ROI its own landmarks agree with (MediaPipe uses
the previous frame's). The detector runs on the first frame of a batch only when a video has fewer tracks than
``max_faces`` (every batch when ``max_faces`` is None), every ``redetect_every`` frames, and after a track is
lost (presence < ``min_presence``); a detection overlapping a live track (IoU > 0.3) does not start a new one.

References: MediaPipe FaceLandmarker task and model cards (Apache-2.0); Kartynnik et al. (2019),
arXiv:1907.06724.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
from gpuface.ops.boxes import box_iou

from gpuface.stages.detect import FaceDetector
from gpuface.core.device import resolve_device
from gpuface.core.errors import InvalidOptionError
from gpuface.ops.geometry import angle_of, crop_rois, rois_to_frame
from gpuface.models.aot import AotRunner
from gpuface.models.facemesh import MESH_INPUT, Blendshapes, FaceMesh
from gpuface.models.graphs import Bucketed
from gpuface.core.syncs import upload
from gpuface.core.types import Faces, rank_in_frame

#: Landmarks giving the 6 BlazeFace-style keypoints of a landmarked face: right/left iris centre, nose tip,
#: upper-lip centre (inner), right/left tragion (subject-centric).
KEYPOINTS_FROM_MESH = (468, 473, 1, 13, 234, 454)

#: Rows per FaceMesh call where a call's size would otherwise follow the batch size (crops between key frames, and
#: of stills; :class:`~gpuface.models.graphs.Bucketed`'s ``cpu_chunk``). 12: the default batch of 16 frames holds
#: 12 frames between key frames per face, so no padding there; and per crop FaceMesh ran faster in chunks of 12
#: than of 8, 6 or 3 on a 2-core x86 VM (0.86, 0.96, 1.21, 1.37 s per 96 crops); `benchmarks/run.py` landmarks row:
#: 37.6 frames/s at 12, 35.3 at 6, 31–34 at 8 (45 before chunking).
MESH_CHUNK = 12
#: Rows per call of the re-runs from refined ROIs between key frames (usually one or two crops: 2 pads least).
REFINE_CHUNK = 2
#: Rows per blendshape call: the MLP gives a row the same bits wherever it sits in a call only from 8 rows up.
BLEND_CHUNK = 16
#: The row counts the networks are AOT-compiled for on the CPU (:mod:`gpuface.models.aot`): a key frame with one
#: track calls FaceMesh on 1 crop; the other calls run in the fixed chunks above. Calls of 1 and 2 crops run on one
#: thread (:data:`gpuface.models.aot.SERIAL_ROWS`), leaving the other core to the half of the landmarker beside them.
AOT_ROWS = {"facemesh": (1, REFINE_CHUNK, MESH_CHUNK), "blendshapes": (BLEND_CHUNK,)}

#: FaceMesh index of each of the 68 iBUG 300-W / dlib points (jaw 0–16, brows 17–26, nose 27–35, eyes 36–47,
#: lips 48–67), the nearest mesh vertex to each 68-point definition on MediaPipe's canonical face model. An
#: approximation for tools that expect 68 points, not a re-trained 68-point model.
IBUG68_FROM_MESH = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)


def to_ibug68(landmarks: torch.Tensor) -> torch.Tensor:
    """The 68-point (iBUG 300-W / dlib order) view (N, 68, C) of FaceMesh landmarks (N, 478, C)."""
    return landmarks[:, list(IBUG68_FROM_MESH)]


def rois_from_detections(boxes: torch.Tensor, keypoints: torch.Tensor, scale: float = 1.5):
    """ROIs (centres (N, 2), sides (N,), angles (N,)) from boxes (N, 4) xyxy and keypoints (N, K≥2, 2) px."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sides = scale * (boxes[:, 2:] - boxes[:, :2]).amax(dim=1)
    d = keypoints[:, 1] - keypoints[:, 0]
    return centres, sides, angle_of(d)


def rois_from_landmarks(landmarks: torch.Tensor, scale: float = 1.5):
    """ROIs from landmarks (N, 478, ≥2) px: bounding-box centre, 1.5 × longer side, rotation 33 → 263."""
    lo, hi = landmarks[..., :2].amin(dim=1), landmarks[..., :2].amax(dim=1)
    d = landmarks[:, 263, :2] - landmarks[:, 33, :2]
    return (lo + hi) / 2, scale * (hi - lo).amax(dim=1), angle_of(d)


def _wrap(a: torch.Tensor) -> torch.Tensor:
    return torch.remainder(a + math.pi, 2 * math.pi) - math.pi


@dataclass
class TrackState:
    """Per-video tracking state carried from one batch to the next.

    ``centres``/``sides``/``angles`` are each track's ROI from its landmarks at the last key frame; ``position``
    counts the frames landmarked so far (key frames and detections are scheduled on it, never on batch
    positions); ``next_detection`` is the position from which the detector looks for new faces again.
    """

    centres: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    sides: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    angles: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    scores: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    next_id: int = 0
    position: int = 0
    next_detection: int = 0
    lost: bool = False

    def __len__(self) -> int:
        return int(self.ids.numel())

    def end_tracks(self) -> None:
        """End every track (e.g. at a shot cut); the next frame is a key frame with detection, and new detections
        get new ids (ids stay unique in the video)."""
        self._keep(torch.zeros(len(self), dtype=torch.bool, device=self.ids.device))
        self.lost = True

    def _keep(self, alive: torch.Tensor) -> None:
        """Keep the tracks at ``alive``: a bool mask (one sync for the five fields) or int64 indices (none)."""
        idx = torch.nonzero(alive).flatten() if alive.dtype == torch.bool else alive
        self.centres, self.sides, self.angles = self.centres[idx], self.sides[idx], self.angles[idx]
        self.ids, self.scores = self.ids[idx], self.scores[idx]


class FaceLandmarker:
    """Batched FaceMesh landmarks, presence and blendshapes with tracking.

    Args:
        detector: ``blazeface-short`` (default, MediaPipe's), ``blazeface-full``, ``mtcnn`` or ``centerface``
            (5 keypoints in MTCNN's order: the eyes set the first region of interest).
        device: torch device. half: run FaceMesh in float16 (CUDA only).
        max_faces: most faces per frame (None: all). min_score: detection score threshold.
        min_presence: drop a face below this presence (MediaPipe ``min_face_presence_confidence`` 0.5).
        redetect_every: also run the detector every this many frames while ``max_faces`` tracks are alive
            (None: only when a track is lost).
        search_every: while fewer than ``max_faces`` faces are tracked (always, without ``max_faces``), the
            detector looks for new faces every this many frames (default 16, about half a second).
        refine_tolerance: re-run FaceMesh on a frame when its own landmarks' ROI differs from the first ROI by
            more than this (fraction of the side; radians for rotation). 0 always refines.
        keyframe_step: every this many frames of the video is a key frame: landmarked from the previous key
            frame's landmark ROIs (a chain), and the only place where tracks end and the detector runs; the frames
            between start from their key frame's ROIs. The schedule follows the frame's position in the video
            (``TrackState.position``), never the batch, so outputs do not depend on the batch size.
        blendshapes: compute the 52 blendshape coefficients.
        aot: FaceMesh and the blendshapes on the CPU as ahead-of-time compiled packages (:mod:`gpuface.models.aot`;
            FaceMesh 1.8–2.4x faster for one crop, 1.4–1.7x in calls of 12 on two x86 VMs; landmarks within
            1e-3 px, blendshapes within 1e-5 of the eager networks): ``auto`` (use the packages built on this
            machine, build missing ones in the background for later runs), ``now`` (build them before the first
            frame, about a minute once), ``off`` (eager); None: ``GPUFACE_AOT``, else ``auto``.
        detector_options: the detector's own parameters (:class:`~gpuface.stages.detect.FaceDetector`; MTCNN's
            ``min_face_size``, ``thresholds``, ``factor`` as mexca passes them).

    Raises:
        InvalidOptionError: bad option values. WeightsError: weights unavailable.

    Example:
        >>> lm = FaceLandmarker(device="cuda")
        >>> state = lm.new_state()
        >>> for batch in VideoReader("clip.mp4").batches(32):
        ...     faces = lm(batch.frames, state)    # landmarks (N, 478, 3), presence, blendshapes (N, 52)
    """

    def __init__(self, detector: str = "blazeface-short", device: torch.device | str = "cpu",
                 max_faces: int | None = None, min_score: float | None = None, min_presence: float = 0.5,
                 redetect_every: int | None = None, refine_tolerance: float = 0.04, keyframe_step: int = 4,
                 blendshapes: bool = True, half: bool = False, aot: str | None = None, search_every: int = 16,
                 detector_options: dict | None = None):
        from gpuface.models.weights import load_graph

        if max_faces is not None and max_faces < 1:
            raise InvalidOptionError("max_faces must be >= 1 (or None for all faces)")
        if (not 0 <= min_presence <= 1 or refine_tolerance < 0 or keyframe_step < 1 or search_every < 1
                or (redetect_every is not None and redetect_every < 1)):
            raise InvalidOptionError("min_presence in [0, 1], refine_tolerance >= 0, keyframe_step >= 1, "
                                     "search_every >= 1, redetect_every >= 1")
        self.device = resolve_device(device)
        kwargs = {} if min_score is None or detector == "mtcnn" else {"score_threshold": min_score}
        self.detector = FaceDetector(detector, self.device, min_score=min_score or 0.0,
                                     **kwargs, **(detector_options or {}))
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        self.mesh = FaceMesh(load_graph("facemesh", self.device)).to(self.dtype)
        self.blend = Blendshapes(load_graph("blendshapes", self.device)) if blendshapes else None
        self.max_faces, self.min_presence = max_faces, min_presence
        self.redetect_every, self.refine_tolerance = redetect_every, refine_tolerance
        self.keyframe_step, self.search_every = keyframe_step, search_every
        # Bucketed runners (gpuface.models.graphs): CUDA graphs on CUDA. A key frame's calls have as many crops as
        # there are tracks, whatever the batch size; the other frames' calls (and stills, and the blendshapes of a
        # batch) grow with the batch, so they run in fixed chunks of MESH_CHUNK rows, zero-padded: a CPU kernel
        # picks its algorithm by the number of rows, and a crop's landmarks must not depend on its company.
        # (first pass, re-runs from refined ROIs): for key frames, and for calls that grow with the batch. On the CPU,
        # the calls of 1 (a key frame with one track), REFINE_CHUNK and MESH_CHUNK crops run AOT-compiled once built.
        mesh = AotRunner("facemesh", self.mesh, AOT_ROWS["facemesh"], aot)
        run = Bucketed(mesh)
        self._key_runs = (run, run)
        self._batch_runs = (Bucketed(mesh, cpu_chunk=MESH_CHUNK), Bucketed(mesh, cpu_chunk=REFINE_CHUNK))
        self._blend_run = (Bucketed(AotRunner("blendshapes", self.blend, AOT_ROWS["blendshapes"], aot),
                                    cpu_chunk=BLEND_CHUNK) if blendshapes else None)
        self.detector_frames = 0  # frames the detector ran on (for reports)
        self.mesh_crops = 0       # FaceMesh forward passes, in crops
        self._count = threading.Lock()   # start and finish may run on two threads

    def new_state(self) -> TrackState:
        """Fresh tracking state for a new video (or for unrelated stills), on the landmarker's device."""
        d = self.device
        return TrackState(torch.zeros(0, 2, device=d), torch.zeros(0, device=d), torch.zeros(0, device=d),
                          torch.zeros(0, dtype=torch.long, device=d), torch.zeros(0, device=d))

    def _mesh(self, frames, row, centres, sides, angles, run: Bucketed):
        crops = crop_rois(frames, row, centres, sides, angles, MESH_INPUT).to(self.dtype)
        n = crops.shape[0]
        with self._count:
            self.mesh_crops += n
        crops = crops.contiguous(memory_format=torch.channels_last)
        pts, presence = run(crops)
        return rois_to_frame(pts.float(), centres, sides, angles, MESH_INPUT), presence.float()

    def _mesh_refined(self, frames, row, slots, rois, landmarks, presence, runs: tuple[Bucketed, Bucketed]):
        """FaceMesh on ``slots`` from ``rois``; slots whose own landmarks' ROI moved by more than the tolerance
        run again from that ROI. Writes ``landmarks``/``presence`` in place; returns the final landmarks' ROIs.
        ``runs``: the runners of the first pass and of the re-runs (``_key_runs`` or ``_batch_runs``)."""
        centres, sides, angles = rois
        lm, pr = self._mesh(frames, row[slots], centres, sides, angles, runs[0])
        c2, s2, a2 = rois_from_landmarks(lm)
        tol = self.refine_tolerance
        moved = (((c2 - centres).norm(dim=1) / sides > tol) | ((s2 / sides - 1).abs() > tol)
                 | (_wrap(a2 - angles).abs() > tol)) & (pr >= self.min_presence)
        idx = torch.nonzero(moved).flatten()      # one host sync
        if len(idx):
            lm[idx], pr[idx] = self._mesh(frames, row[slots[idx]], c2[idx], s2[idx], a2[idx], runs[1])
            c2[idx], s2[idx], a2[idx] = rois_from_landmarks(lm[idx])
        landmarks[slots], presence[slots] = lm, pr
        return c2, s2, a2

    def _detection_due(self, state: TrackState, ended: bool) -> bool:
        """Whether the key frame at ``state.position`` runs the detector (a function of positions only)."""
        if state.lost or ended:
            return True
        full = self.max_faces is not None and len(state) >= self.max_faces
        return not (full and self.redetect_every is None) and state.position >= state.next_detection

    def _detect_into(self, frames: torch.Tensor, row: int, state: TrackState) -> torch.Tensor:
        """Detect in ``frames[row]`` and append the faces that no track covers (up to ``max_faces``) to the state,
        with ROIs from the detections. Returns the indices of the new tracks in the state."""
        faces = self.detector(frames[row:row + 1])
        self.detector_frames += 1
        state.lost = False
        every = self.search_every if self.max_faces is None or len(state) < self.max_faces else self.redetect_every
        state.next_detection = (state.position // every + 1) * every if every else 1 << 62
        n_old = len(state)
        if len(faces) == 0:
            return torch.arange(n_old, n_old, device=self.device)
        faces = faces.select(torch.argsort(faces.scores, descending=True))
        c, s, a = rois_from_detections(faces.boxes, faces.keypoints)
        if n_old:
            half = state.sides[:, None] / 3  # a track's ROI is 1.5x the face: compare face-sized boxes
            track_boxes = torch.cat([state.centres - half, state.centres + half], dim=1)
            new = (box_iou(faces.boxes, track_boxes) <= 0.3).all(dim=1)
        else:
            new = torch.ones(len(faces), dtype=torch.bool, device=faces.boxes.device)
        room = None if self.max_faces is None else max(self.max_faces - n_old, 0)
        idx = torch.nonzero(new).flatten()[:room]
        n = idx.numel()
        state.centres = torch.cat([state.centres.to(c), c[idx]])
        state.sides = torch.cat([state.sides.to(s), s[idx]])
        state.angles = torch.cat([state.angles.to(a), a[idx]])
        state.scores = torch.cat([state.scores.to(s), faces.scores[idx]])
        state.ids = torch.cat([state.ids.to(c.device), torch.arange(state.next_id, state.next_id + n, device=c.device)])
        state.next_id += n
        return torch.arange(n_old, n_old + n, device=self.device)

    def __call__(self, frames: torch.Tensor, state: TrackState | None = None) -> Faces:
        """Landmark every face in a batch of consecutive frames of one video.

        Key frames (every ``keyframe_step``-th frame of the video, and the first frame after
        :meth:`TrackState.end_tracks`) are landmarked in order, each from the previous key frame's landmark ROIs
        (refined from its own landmarks when they moved); tracks end there when their presence drops below
        ``min_presence``, and the detector runs there when due. All other frames of the batch are then landmarked
        at once from their key frame's ROIs (refined likewise). Every decision depends on the frame's position in
        the video, so any batch size (and any split by :class:`~gpuface.jobs.runner.OomGuard`) gives the same output.

        Args:
            frames: uint8 (B, 3, H, W) RGB.
            state: tracking state of this video (:meth:`new_state`); None treats the frames as unrelated stills
                (detector on every frame, track_id -1).

        Returns:
            :class:`Faces` sorted by frame, then track: boxes (landmarks' bounding box, xyxy px), scores (score of
            the detection that started the track), keypoints (N, 6, 2) from :data:`KEYPOINTS_FROM_MESH`,
            landmarks (N, 478, 3) px (z in the same units, relative), presence (N,), track_id (N,),
            blendshapes (N, 52).
        """
        return self.start(frames, state).finish()

    @torch.inference_mode()
    def start(self, frames: torch.Tensor, state: TrackState | None = None) -> "Landmarking":
        """The first half of ``__call__``: the key frames, in order (the tracks' state is final when it returns),
        and the detector where due. Returns a :class:`Landmarking` whose ``finish()`` landmarks the frames between
        the key frames (one call) and gives the :class:`Faces` that ``__call__`` returns. The next batch's
        ``start`` may run on another thread while this one finishes (the runner's pipeline on the CPU); the
        outputs are the same either way. Raises as ``__call__``."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise InvalidOptionError(f"frames must be uint8 (B, 3, H, W), got {tuple(frames.shape)} {frames.dtype}")
        frames = frames.to(self.device)
        if state is None:
            return _Finished(self._stills(frames))
        b = frames.shape[0]
        state.centres, state.sides, state.angles = (t.to(self.device) for t in (state.centres, state.sides,
                                                                                 state.angles))
        state.ids, state.scores = state.ids.to(self.device), state.scores.to(self.device)
        parts = []        # (rows, landmarks, presence, ids, scores) of key frames
        between = []      # (row, ROIs, ids, scores) of the other frames, landmarked together at the end
        for row in range(b):
            if state.position % self.keyframe_step == 0 or state.lost:
                ended = False
                if len(state):
                    lm, pr, rois = self._key_mesh(frames, row, (state.centres, state.sides, state.angles))
                    alive = (pr >= self.min_presence).nonzero()[:, 0]       # the key frame's one host sync
                    ended = len(alive) < len(pr)
                    parts.append((self._rows(row, len(alive)), lm[alive], pr[alive], state.ids[alive],
                                  state.scores[alive]))
                    state._keep(alive)
                    state.centres, state.sides, state.angles = (r[alive] for r in rois)
                if self._detection_due(state, ended):
                    new = self._detect_into(frames, row, state)
                    if new.numel():
                        lm, pr, rois = self._key_mesh(frames, row, (state.centres[new], state.sides[new],
                                                                     state.angles[new]))
                        keep = torch.ones(len(state), dtype=torch.bool, device=self.device)
                        present = pr >= self.min_presence
                        keep[new] = present
                        ok = present.nonzero()[:, 0]
                        parts.append((self._rows(row, len(ok)), lm[ok], pr[ok], state.ids[new][ok],
                                      state.scores[new][ok]))
                        for t, r in zip((state.centres, state.sides, state.angles), rois):
                            t[new] = r
                        state._keep(keep)
            elif len(state):
                between.append((row, (state.centres, state.sides, state.angles), state.ids, state.scores))
            state.position += 1
        return Landmarking(self, frames, parts, between, state.next_id)

    def _finish(self, frames, parts, between, next_id) -> Faces:
        if between:
            rows = upload(torch.tensor([r for r, _, ids, _ in between for _ in range(len(ids))], dtype=torch.long,
                                       device="cpu"), self.device)          # sizes known on the host
            rois = tuple(torch.cat([r[i] for _, r, _, _ in between]) for i in range(3))
            n = rows.numel()
            landmarks = torch.empty(n, 478, 3, device=self.device)
            presence = torch.empty(n, device=self.device)
            self._mesh_refined(frames, rows, torch.arange(n, device=self.device), rois, landmarks, presence,
                               self._batch_runs)
            keep = (presence >= self.min_presence).nonzero()[:, 0]
            parts.append((rows[keep], landmarks[keep], presence[keep], torch.cat([i for *_, i, _ in between])[keep],
                          torch.cat([sc for *_, sc in between])[keep]))
        if not parts:
            return _empty(self.device)
        rows, landmarks, presence, ids, scores = (torch.cat([p[i] for p in parts]) for i in range(5))
        order = torch.argsort(rows * (next_id + 1) + ids, stable=True)   # by frame, then track id
        return self._faces(landmarks[order], presence[order], rows[order], scores[order], ids[order])

    def _rows(self, row: int, n: int) -> torch.Tensor:
        return torch.full((n,), row, dtype=torch.long, device=self.device)

    def _key_mesh(self, frames, row: int, rois):
        """FaceMesh of every ROI on frame ``row`` (refined); returns landmarks, presence and their own ROIs."""
        n = rois[0].shape[0]
        landmarks = torch.empty(n, 478, 3, device=self.device)
        presence = torch.empty(n, device=self.device)
        rows = torch.full((n,), row, dtype=torch.long, device=self.device)
        own = self._mesh_refined(frames, rows, torch.arange(n, device=self.device), rois, landmarks, presence,
                                 self._key_runs)
        return landmarks, presence, own

    def _stills(self, frames: torch.Tensor) -> Faces:
        """Unrelated frames: detect in all at once, landmark every detection (refined once), no tracking."""
        faces = self.detector(frames)
        self.detector_frames += frames.shape[0]
        if self.max_faces is not None:
            order = torch.argsort(faces.row * 2.0 - faces.scores, stable=True)  # by frame, best first
            faces = faces.select(order)
            faces = faces.select(rank_in_frame(faces.row) < self.max_faces)
        n = len(faces)
        if n == 0:
            return _empty(self.device)
        landmarks = torch.empty(n, 478, 3, device=self.device)
        presence = torch.empty(n, device=self.device)
        slots = torch.arange(n, device=self.device)
        self._mesh_refined(frames, faces.row, slots, rois_from_detections(faces.boxes, faces.keypoints),
                           landmarks, presence, self._batch_runs)
        keep = presence >= self.min_presence
        return self._faces(landmarks[keep], presence[keep], faces.row[keep], faces.scores[keep],
                           torch.full((int(keep.sum()),), -1, dtype=torch.long, device=self.device))

    def _faces(self, landmarks, presence, row, scores, track_ids) -> Faces:
        lo, hi = landmarks[..., :2].amin(dim=1), landmarks[..., :2].amax(dim=1)
        faces = Faces(row=row, boxes=torch.cat([lo, hi], dim=1), scores=scores,
                      keypoints=landmarks[:, list(KEYPOINTS_FROM_MESH), :2].contiguous())
        faces.landmarks, faces.presence, faces.track_id = landmarks, presence, track_ids
        faces.blendshapes = (self._blend_run(landmarks[:, self.blend.subset, :2])[0] if self.blend is not None
                             else landmarks.new_zeros(landmarks.shape[0], 0))
        return faces


class Landmarking:
    """A batch between :meth:`FaceLandmarker.start` and ``finish()``: its key frames are landmarked, the frames
    between them not yet."""

    def __init__(self, landmarker: FaceLandmarker, frames, parts, between, next_id: int):
        self._args = (frames, parts, between, next_id)
        self._landmarker = landmarker

    @torch.inference_mode()
    def finish(self) -> Faces:
        """Landmark the frames between the key frames and the blendshapes of all: the batch's :class:`Faces`."""
        return self._landmarker._finish(*self._args)


class _Finished:
    """A result known at ``start`` (stills)."""

    def __init__(self, faces: Faces):
        self.faces = faces

    def finish(self) -> Faces:
        return self.faces


def _empty(device) -> Faces:
    faces = Faces.empty(num_keypoints=6, device=device)
    faces.landmarks = torch.zeros(0, 478, 3, device=device)
    faces.presence = torch.zeros(0, device=device)
    faces.track_id = torch.zeros(0, dtype=torch.long, device=device)
    faces.blendshapes = torch.zeros(0, 52, device=device)
    return faces


__all__ = ["AOT_ROWS", "FaceLandmarker", "Landmarking", "TrackState", "IBUG68_FROM_MESH", "KEYPOINTS_FROM_MESH",
           "to_ibug68", "rois_from_detections", "rois_from_landmarks"]
