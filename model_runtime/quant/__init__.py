"""Weight formats: INT4 packed experts (kept packed), FP8 blocks (dequantized at load), checkpoint conversion."""
