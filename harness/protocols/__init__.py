"""Sans-IO wire formats: build requests, parse responses and streams, fingerprint clouds. No sockets, no clocks."""
