"""``coherence review``: a web app where native speakers rate a run's triplets (ratings in run.db).

Public names: :func:`open_run`, :func:`add_reviewer`, :func:`revoke_reviewer`, :func:`serve`,
:func:`create_app`, :func:`coherence.review.agreement.summarize`.
"""

from coherence.review.agreement import summarize
from coherence.review.run import ReviewRun, add_reviewer, open_run, revoke_reviewer


def create_app(*args, **kw):  # noqa: ANN002, ANN003 - imports FastAPI only when serving
    from coherence.review.app import create_app as _create_app

    return _create_app(*args, **kw)


def serve(*args, **kw):  # noqa: ANN002, ANN003
    from coherence.review.app import serve as _serve

    return _serve(*args, **kw)


__all__ = ["ReviewRun", "add_reviewer", "create_app", "open_run", "revoke_reviewer", "serve", "summarize"]
