"""Password hashing: Argon2id at a cost that keeps a login to tens of milliseconds here.

Django's PBKDF2 default (1.5M iterations) costs about 0.9 s of CPU per login, which stalls every
other page on a small server when a team logs in at once. Argon2id spends memory rather than
time: 64 MiB and two passes over it, on two lanes. Older PBKDF2 hashes still verify and are
rewritten as Argon2 on the user's next login (Django upgrades to the first hasher).
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class MergeableArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 64 * 1024  # KiB
    parallelism = 2
