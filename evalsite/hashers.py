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

A process hashes on one thread of its own, one password at a time. Each thread that hashes
keeps its own 24 MiB in the C library's per-thread heap, and the kernel faults those pages in the
first time: a web process whose four request threads each hashed took about 25,000 page faults
on its first logins, more CPU than the hashes' own work in a storm of logins just after a
(re)start. On one thread, the same 24 MiB serve every login, and they stay in the processor's
cache. A second login in the same process waits for the first one's hash (tens of milliseconds);
the other request threads go on serving pages. `warm_up` hashes once on that thread, so a new
web worker faults its pages in before its first login.
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
