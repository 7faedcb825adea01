"""Who the household reaches over Tox: the contacts book and its safe edits, the pairings learned
from friends' mail, where an address leads, whether a friend may use a sender address, and the
`toxbridge contacts` commands."""
