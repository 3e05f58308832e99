"""Quality of learned words in the toy world (issue 6): oracle-measured hue error against the best caption.

See :mod:`bench.quality.run`.
"""
