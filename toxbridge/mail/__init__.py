"""The Postfix and Dovecot side: LMTP in from Postfix, LMTP out to Dovecot, the socketmap Postfix
asks, Postfix's queue, and what a mail's header holds."""
