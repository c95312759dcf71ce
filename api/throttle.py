"""Requests per token per minute, counted in Django's cache (shared by every web process when
MERGEABLE_CACHE_URL is set; per process otherwise, which is enough on one laptop).

Not django-ninja's throttles: they keep each request's state on one instance shared by every
thread, and rewrite a list of timestamps in the cache (two requests at once count as one). A
fixed window counted with the cache's atomic incr() has neither problem.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 60


def retry_after(token_id: int) -> int | None:
    """Count one request of token `token_id`. None if it may go ahead, else the seconds until
    the current window ends (the Retry-After of its 429)."""
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = f"api-rate:{token_id}:{window}"
    # add() then incr(): atomic on Redis and on the local-memory cache alike.
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add() and incr()
        cache.set(key, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    if count <= settings.MERGEABLE_API_RATE_PER_MINUTE:
        return None
    return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
