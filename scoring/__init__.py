"""Human judgement of runs: rubrics, blind reviews, pairwise votes, adjudications, leaderboards.

Owns the review queue (`queue`, `pairing`), the review page (`review_page`, `reviews`), the
statistics (`stats`), the leaderboards (`leaderboard`) and the results export (`exports`). It
reads runs through `runs.models`, shows them with `runs`' text helpers (`diffs`, `identity`,
`redaction`, the markdown policy) and may import `evalsite`'s shared pieces (`evalsite.roles`).
It must not import `runs`' engine or workflows (execution, tasks, campaigns): scoring judges what
was run and never runs anything. `runs` never imports it.
"""
