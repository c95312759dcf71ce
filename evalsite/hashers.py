"""Password hashing: Argon2id at a cost that keeps a login to tens of milliseconds here.

Django's PBKDF2 default (1.5M iterations) costs about 0.9 s of CPU per login, which stalls every
other page on a small server when a team logs in at once. Argon2id spends memory rather than
time: 32 MiB and two passes over it, on one lane (above OWASP's 19 MiB, two passes, one lane).
One lane, because a second lane runs on a second core: it halves the wait of a lone login but
doubles the CPU that twenty simultaneous logins take from everyone else (about 60 ms of CPU a
login here either way). Hashes made with other parameters, and older PBKDF2 hashes, still
verify and are rewritten with these on the user's next login (Django's `must_update`).
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class MergeableArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 32 * 1024  # KiB
    parallelism = 1
