"""The cascade outside PyTorch: ONNX export, the ONNX Runtime runner, INT8 (docs/deploy.md)."""
