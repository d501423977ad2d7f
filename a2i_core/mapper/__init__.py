"""The mapper: the model, its (audio, prompt) pairs, training, evaluation, provenance and the artifact it ships as."""
