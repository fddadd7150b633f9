"""Model definitions built from the layers; pure modules, no loading or quantization."""
