"""Password hashing: Argon2id at a cost that keeps a login to tens of milliseconds.

Django's PBKDF2 default (1.5M iterations) costs about 0.9 s of CPU per login on a small server,
which stalls every other page when a team logs in at once. Argon2id spends memory rather than
time: 24 MiB and two passes over it, on one lane (above OWASP's 19 MiB, two passes, one lane).
That costs about 7% of PBKDF2's default on the same machine: 22 ms where PBKDF2 takes 0.31 s,
about 65 ms where it takes 0.9 s. 32 MiB cost 12% (37 ms against 0.31 s): past 32 MiB the C
library maps each hash's memory afresh and the kernel zeroes it at every login.
One lane, because a second lane runs on a second core: it halves the wait of a lone login but
doubles the CPU that twenty simultaneous logins take from everyone else. Hashes made with other
parameters, and older PBKDF2 hashes, still verify and are rewritten with these on the user's
next login (Django's `must_update`).
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class MergeableArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 24 * 1024  # KiB
    parallelism = 1
