"""Operating the bridge: `toxbridge status` and the control socket it asks the daemon over, and
what a user hands a friend (the Tox ID as a QR code, an invitation)."""
