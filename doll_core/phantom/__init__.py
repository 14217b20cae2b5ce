"""The procedural chest X-ray phantom."""
