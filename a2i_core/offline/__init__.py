"""The offline demo's machinery: tiny models of the real architectures, SD3 and CLIP fitted to procedural
pictures, the demo's own audio_encoder and encoders stages, and its DVC workspace. Reached only by those two stages
(``stages/offline.dvc.yaml``) and by ``a2i demo``: editing it reruns nothing in a project with real models.

May import: core, data, audio, diffusion.
"""
