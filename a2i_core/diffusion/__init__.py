"""Stable Diffusion 3 as a frozen renderer: pinning and loading it, prompt embeddings, rendering with the
sequence fills, and CLIP's image scores.

May import: core.
"""
