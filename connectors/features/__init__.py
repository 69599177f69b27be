"""Featurizers and maskers: inputs (documents, images, prompts) into an ``Example``'s features,
and a mask row into the masked input a backend scores."""
