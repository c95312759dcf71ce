"""api: Mergeable from outside the browser, and campaigns that run again.

Owns personal API tokens (`tokens`, `throttle`, `auth`), the token API under /api/ built with
django-ninja (`endpoints`, `schemas`), campaign series with their schedules in
django-celery-beat's tables and the "re-run with another model" clone (`series`, `tasks`), and
the pages for all of these (`views`, templates/api/).

It sits on top: it calls the public functions of `runs` (files, campaigns, imports) and
`scoring` (exports, leaderboard) and adds no rule of its own to what they decide, so a file, a
form and the API are held to the same rules. Neither `runs` nor `scoring` imports `api`, and
`api` imports no view module of theirs except the forms they share (CampaignForm,
LeaderboardFilterForm): a rule written twice drifts.
"""
