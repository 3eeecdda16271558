"""The `predict.py` files that `luodi export` copies into a bundle: each needs only onnxruntime, numpy and
tokenizers, reads the bundle's data files, and reproduces luodi's predictions."""
