"""`make bench`: toxbridge against the direct Postfix→Dovecot path and raw toxcore, measured in one run.

Everything runs on loopback (the Makefile puts it in a network namespace with only loopback):
a local tox-bootstrapd, two households (src sends, dst receives) with their own Postfix, Dovecot
and bridge, and two bare ToxNode processes for the raw transfer. `python -m bench.run --help`.
"""
