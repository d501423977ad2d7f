"""The offline demo's machinery: tiny models of the real architectures, fitted to procedural pictures, and
the demo's DVC workspace. Reached only by the stages that build tiny models and by `a2i demo`."""
