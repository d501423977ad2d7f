"""The foundation every layer stands on: errors, typed params, files, URLs, names from data, devices and
processes, Parquet tables and their contracts (candidates, manifest, audio packs), audio decoding, provenance,
retrieval by cosine, where pretrained models come from.

May import: nothing of a2i_core outside core.
"""
