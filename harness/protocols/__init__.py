"""Sans-IO wire formats: build requests, parse responses and streams, fingerprint clouds.

No sockets, no clocks: the engine, the Locust users, the mocks and the router share them.
"""
