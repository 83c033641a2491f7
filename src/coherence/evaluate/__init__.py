"""Evaluation: ``coherence eval`` suites, and (this branch) KoBBQ from a local TSV, red-team sets from
local files, capability via lm-evaluation-harness and judge calibration against human labels
(:mod:`coherence.evaluate.kobbq`, :mod:`.redteam`, :mod:`.capability`, :mod:`.calibrate`)."""
