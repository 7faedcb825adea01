# toxbridge: run before every user's own Sieve script (sieve_before in toxbridge.conf).
#
# A mail that crossed Tox carries X-Toxbridge-Id: the SHA-256 of what was sent. If the receiving
# bridge dies after Dovecot stored the mail but before it could record that, the sender retries
# and the same mail comes again; Dovecot remembers the id and drops the second copy, so the
# mailbox holds it exactly once. Mail without the header is never affected.
require ["duplicate"];

if duplicate :header "X-Toxbridge-Id" :seconds 2592000 {
  discard;
  stop;
}
