"""The homepage on FastAPI: ``create_app()`` in :mod:`.app`.

Run it with ``python -m examples.serve``.
"""
