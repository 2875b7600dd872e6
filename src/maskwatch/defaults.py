"""Defaults shared by the library and the command line, in a module light enough for the
parser to import (no OpenCV, no NumPy)."""

DETECT_SCORE_THRESHOLD = 0.5
DETECT_MIN_SIDE = 960  # photos smaller than this are also searched upscaled to it
DETECT_MAX_SIDE = 1920  # larger frames are scaled down for detection
CROP_MARGIN = 0.15  # around a face box, per side, before squaring and resizing
BLUR_CHOICES = ("none", "no_mask", "all")
