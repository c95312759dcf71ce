"""Password hashing: Argon2id at a cost that keeps a login to tens of milliseconds.

Django's PBKDF2 default (1.5M iterations) costs about 0.9 s of CPU per login on a small server,
which stalls every other page when a team logs in at once. Argon2id spends memory rather than
time: 24 MiB and two passes over it, on one lane (above OWASP's 19 MiB, two passes, one lane).
That costs 5-14% of PBKDF2's default measured at the same moment (22-43 ms here, where PBKDF2
took 0.22-0.73 s at different hours; `bench/bench_team_load.py` reports both), so 50-125 ms where
PBKDF2 takes 0.9 s. Past 32 MiB the C library maps each hash's memory afresh and the kernel
zeroes it at every login.
One lane, because a second lane runs on a second core: it halves the wait of a lone login but
doubles the CPU that twenty simultaneous logins take from everyone else. Hashes made with other
parameters, and older PBKDF2 hashes, still verify and are rewritten with these on the user's
next login (Django's `must_update`).

A process hashes on one thread of its own, one password at a time. Each thread that hashes
keeps its own 24 MiB in the C library's per-thread heap, which the kernel faults in page by page
the first time; and until a process had freed one such block, the library mapped each hash's
memory afresh. The first 20 logins after a start took about 98,000 page faults in the two web
processes (3,900 now), a few hundred milliseconds of CPU in the storm of logins that follows a
(re)start. On one thread, the same 24 MiB serve every login. A second login in the same process
waits for the first one's hash (tens of milliseconds); the other request threads go on serving
pages. The master hashes once before it forks (`hash_once`), and each web worker hashes once on
its hashing thread before it accepts a connection (`warm_up`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.contrib.auth.hashers import Argon2PasswordHasher


class MergeableArgon2PasswordHasher(Argon2PasswordHasher):
    time_cost = 2
    memory_cost = 24 * 1024  # KiB
    parallelism = 1

    def encode(self, password: str, salt: str) -> str:
        return on_hashing_thread(super().encode, password, salt)

    def verify(self, password: str, encoded: str) -> bool:
        return on_hashing_thread(super().verify, password, encoded)


_hashing: ThreadPoolExecutor | None = None
_hashing_lock = threading.Lock()


def on_hashing_thread[T](hash_function: Callable[..., T], *args) -> T:
    """Call `hash_function(*args)` on this process's hashing thread and return what it returns."""
    global _hashing
    with _hashing_lock:
        if _hashing is None:
            _hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-hashing")
    return _hashing.submit(hash_function, *args).result()


def _forget_the_parents_thread() -> None:
    # A forked child has a copy of the executor but not its thread: work submitted to it would
    # wait forever. The child makes its own on its first hash.
    global _hashing, _hashing_lock
    _hashing, _hashing_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_the_parents_thread)


def hash_once() -> str:
    """Hash a throwaway password on the calling thread, at the site's parameters.

    Run by the web server's master before it forks: the C library then keeps a hash's memory in
    its heap rather than mapping it afresh for each of a new worker's first hashes (it learns
    that size from the first block it unmaps)."""
    hasher = MergeableArgon2PasswordHasher()
    return Argon2PasswordHasher.encode(hasher, "warm-up", hasher.salt())


def warm_up() -> None:
    """Hash once on this process's hashing thread: its memory is faulted in before a login."""
    on_hashing_thread(hash_once)
