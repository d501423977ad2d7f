"""Data acquisition: sources (AudioSet, ESC-50, AudioCaps, folders, archives, the synthetic classes), ingest,
download and the clip fetchers. Knows nothing of models: no torch, diffusers or transformers."""
