"""The reference router: a policy-driven OpenAI/Azure gateway in front of the mock fleet.

It routes by policy, balances across allowed regions, fails over inside the allowed set, keeps
stateful calls on the backend holding their state, passes streams through unbuffered, and can
break the policy on purpose (``harness.router.inject``) to prove the compliance checker.

    decide.py    pure: classify a request, split backends by the policy, balance
    backends.py  the backend table from a fleet's endpoint lines
    affinity.py  response/conversation id -> holder backend
    proxy.py     forwarding, URL-form translation, failover, the self-test switches applied
    relay.py     one backend answer to the client: failover discard, stream pass-through
    server.py    the inbound HTTP/1.1 server (asyncio protocol + httptools)
    upstream.py  one lean keep-alive pool per backend (harness.engine.transport)
    inject.py    self-test switches and their JSONL log (schema in its docstring)
    app.py       routes, the ready line and the process entry point
    process.py   ``RouterProcess``: the router as a child process

Nothing is imported here, so ``harness.router.inject`` (flag checks) loads without aiohttp,
pandas or pyarrow.
"""
