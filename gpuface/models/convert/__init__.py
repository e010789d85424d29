"""Readers that turn upstream model files (TFLite flatbuffers, dlib .dat, ONNX) into PyTorch state_dicts."""
