"""The Tox side: the binding over libtoxcore, one node per identity on the asyncio loop, the
bridge-to-bridge wire format, and each identity's friends and its outgoing and incoming transfers."""
