"""``colbert-engine serve``: the engine as an HTTP/JSON service (FastAPI + uvicorn).

Needs the ``serve`` extra (``pip install 'colbert-engine[serve]'``). :func:`create_app`
gives the ASGI app; :class:`ServeConfig` holds the options and limits.
"""

from colbert_engine.server.service import ServeConfig  # noqa: F401


def create_app(config, service=None):
    from colbert_engine.server.app import create_app as _create_app

    return _create_app(config, service)


def serve(config, **kwargs) -> None:
    from colbert_engine.server.app import serve as _serve

    _serve(config, **kwargs)
