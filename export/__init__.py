"""Export: checkpoint -> TorchScript / ExecuTorch (.pte) / ONNX, FP32 and INT8, each verified."""
