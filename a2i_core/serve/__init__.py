"""Any sound to an image with a trained mapper: generate and the web app. Imports nothing of the data pipeline."""
