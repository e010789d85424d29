"""Identity: aligned face chips, face embeddings (dlib ResNet, FaceNet), clustering into identities."""
from .cluster import cluster_embeddings, label_confidence
from .embed import Embedder, face_chips

__all__ = ["Embedder", "face_chips", "cluster_embeddings", "label_confidence"]
