"""One thin entry script per DVC stage; run as `python -m stages.NAME` from the project root."""
