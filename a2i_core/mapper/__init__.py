"""The mapper: the model, its (audio, prompt) pairs, training, evaluation, and the artifact it ships as (with
its model card).

May import: core, audio, diffusion.
"""
