"""Pretrained weights from other frameworks into mk_keras models (PyTorch state dicts, keras.applications)."""
