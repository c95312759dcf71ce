"""The site's configuration and what every app shares.

Owns the settings (read from the environment), the URL root, the Celery app and the embedded
queue, and the pieces `runs` and `scoring` both use: roles (`roles`), encrypted fields (`fields`),
the signed cache (`cache`) and upload limits (`uploads`); plus the pages that span the apps (the
dashboard, user admin) and the site-wide commands. The shared pieces must not import `runs` or
`scoring` (they import them); only the modules that compose the apps (`urls`, `dashboard`,
`views`, the `rotate_keys` command) may.
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
