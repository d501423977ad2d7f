"""Several sounds at once: which sounds a clip holds (a label head trained on mixtures, or the mapper's prediction
decomposed over the prompt bank), each sound's own conditioning combined in one image (one joint text sequence, or
regions denoised under their own sound and blended every step), stereo placement of each sound from the channels,
and the mixtures the label head learns from and the mixtures stage is measured on.

May import: core, audio, diffusion, mapper.
"""
