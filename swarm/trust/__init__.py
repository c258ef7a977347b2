"""Trust: who may reach a cluster and what each may say.

`credentials` (certificates, credentials and the token strings that carry them), `authority` (the
cluster's signing key and the files a founding machine keeps), `signing` (every message signed by its
sender and checked by its receiver), `roles` (what each kind of principal may do), `audit` (the
hash-chained log of critical operations), `tls` (the broker's X.509 material). `docs/security.md` has
the threat model.
"""
