"""Speed benchmark: our packed Textual Inversion trainer against the standard recipe (see README.md)."""
