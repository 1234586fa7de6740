"""Chinese NLP for live comments: normalisation, segmentation, topics, sentiment and confusion."""
