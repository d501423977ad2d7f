"""Data acquisition: the sources (AudioSet, ESC-50, AudioCaps, VGGSound, folders, archives, the synthetic classes),
ingest, the download queue, the clip fetchers and the reference frames (the source video's frame at an evaluated
clip's midpoint, for the image measures). Knows nothing of models.

May import: core. Never torch, diffusers or transformers.
"""
