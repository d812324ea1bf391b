"""Vision tools: the linear probe of image checkpoints (``d2v-image-probe``)."""
