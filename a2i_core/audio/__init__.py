"""The frozen audio encoders (VGGish, CLAP, AST) behind one interface, the audio features they make, and
AudioSet's released embeddings as the same features.

May import: core.
"""
