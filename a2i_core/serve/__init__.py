"""Any sound to an image with a trained mapper: generate, the example sounds and the web app. Nothing here
loads the data pipeline.

May import: core, audio, diffusion, mapper, timeline, layers.
"""
