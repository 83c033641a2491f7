"""Evaluation: Inspect AI tasks and scorers read from the pack (safety, over-refusal, anchoring, thick vs
thin, degenerate answers), paired comparisons with intervals; ``coherence eval``. KoBBQ from a local TSV,
red-team sets from local files, capability via lm-evaluation-harness and judge calibration live in
:mod:`coherence.evaluate.kobbq`, :mod:`.redteam`, :mod:`.capability` and :mod:`.calibrate`.

:func:`evaluate` is the library entry point: it returns the results (``results.json``'s content), so a
training-recipe sweep can script it. Inspect AI is imported only when an eval runs.
"""

from coherence.evaluate.results import headline
from coherence.evaluate.runner import SUITES, EvalOptions, Progress, evaluate, model_args_for

__all__ = ["SUITES", "EvalOptions", "Progress", "evaluate", "headline", "model_args_for"]
