"""Data sources: each turns its metadata into candidate (clip, label, prompt) rows.

Sources know nothing of models. Every candidate row carries what the download stage needs to
materialise its clip, so download reads the candidates table and nothing else.
"""
