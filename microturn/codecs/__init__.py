"""Codecs: audio I/O and resampling, dMel, vocoders, image patches. The lowest layer: imports nothing of microturn."""
