"""The body of each pipeline stage, one module per stage: ``stages/NAME.py`` parses its paths and params and calls
the function here. Anything else that needs a stage's work (an extra evaluation set) calls the same function, so
settings such as dtype, device or the T5 switch cannot drift.

May import: core, data, audio, diffusion, mapper, serve, timeline, layers.
"""
