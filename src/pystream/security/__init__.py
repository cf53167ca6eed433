"""Security: principals, TLS, SASL authentication and ACL authorization.

The layer sits just above ``config``/``protocol``: the broker, pystream's own
client and the metadata stores (which persist credentials and ACLs) all use it,
and it imports none of them.
"""
