"""Data acquisition: the sources (AudioSet, ESC-50, AudioCaps, folders, archives, the synthetic classes), ingest,
the download queue and the clip fetchers. Knows nothing of models.

May import: core. Never torch, diffusers or transformers.
"""
