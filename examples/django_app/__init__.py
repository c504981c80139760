"""The homepage on Django: async views, settings in :mod:`.settings`, ASGI in :mod:`.asgi`.

Run it under an ASGI server that speaks the lifespan protocol::

    python -m examples.serve --app django --port 8001   # uvicorn (uvloop, httptools)
    uvicorn examples.django_app.asgi:application --port 8001
    hypercorn examples.django_app.asgi:application --bind 127.0.0.1:8001
"""
