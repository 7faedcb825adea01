#!/usr/bin/python3
"""Make tox-bootstrapd's keys file once (public key then secret key, 32 bytes each) and print
the public key in hex. tox-bootstrapd would make it at its first start, but the households'
configurations need the key before it runs."""

import os
import sys

from nacl.public import PrivateKey

path = sys.argv[1]
try:
    with open(path, "rb") as f:
        keys = f.read()
except FileNotFoundError:
    secret = PrivateKey.generate()
    keys = bytes(secret.public_key) + bytes(secret)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(keys)
    print(f"created {path}", file=sys.stderr)
if len(keys) != 64:
    sys.exit(f"{path}: {len(keys)} bytes, not a tox-bootstrapd keys file (64)")
print(keys[:32].hex())
