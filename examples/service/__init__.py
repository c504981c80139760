"""The running homepage that both example apps serve, whatever the framework.

* :mod:`.settings`: what to connect to and how, from the environment or Django settings;
* :mod:`.lifetime`: :func:`running` owns the MongoDB client (and an embedded
  server), the seeded data, the aggregator, the rollout and its Redis feed;
* :mod:`.legacy`: the six legacy endpoints, answered the same in both apps;
* :mod:`.faults`: a test and operations hook, off by default, that makes
  chosen sections fail, hang or slow down in a real server;
* :mod:`.demo`: what the demo page asks of a server: a simulated network
  latency (``X-Simulated-Latency-Ms``) and, only with
  ``BATCHPAGE_DEMO_FAULTS=1``, a run-time fault switch (``/demo/faults``);
* :mod:`.rollout_feed`: keeps the rollout's percentage in step with a Redis key.

The apps (``examples.fastapi_app``, ``examples.django_app``) only route
requests to these and convert replies with ``batchpage.contrib``.
"""
