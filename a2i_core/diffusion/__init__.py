"""Stable Diffusion 3 as a frozen renderer: loading, prompt embeddings, rendering, and CLIP's image scores."""
