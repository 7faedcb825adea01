"""Thin ctypes binding over Debian's libtoxcore.so.2 and an asyncio-friendly wrapper."""
