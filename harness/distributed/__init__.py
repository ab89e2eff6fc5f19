"""Distributed runs on Locust's master/worker mode: one global open-loop plan, the harness engine
in every worker, a lossless merge on the master, the standard run directory.

Locust is the transport and the console here, not the load generator: its users and spawn rate
do nothing (one idle user keeps its runner happy). The modules that import gevent
(``master``, ``worker``, ``plugin``) are only ever imported by ``loadtests/locustfile.py``;
``coordinator`` (fleet, judging) and ``launch`` (``harness run --engine locust``) are plain
asyncio processes. See docs/distributed.md.
"""
