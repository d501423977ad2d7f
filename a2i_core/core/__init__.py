"""The foundation every layer stands on: errors, typed params, files, URLs, names, devices, processes, Parquet
tables and their contracts, provenance, where pretrained models come from. Imports nothing above it."""
