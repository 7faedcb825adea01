"""Private Postfix, Dovecot and tox-bootstrapd instances on loopback, for tests and the demo."""
