"""What gets run: repositories, prompt sets and prompts, models, contestants, campaigns, runs.

Owns curating what is run (models, forms, the files of FORMATS.md in `runs.files`), launching and
cancelling campaigns (`campaigns`), the engine that executes a run on a worker (`execution`,
`workspace`, `sandbox`, `caps`, `gateway`, `providers`, one harness per module in `agents`),
importing runs made elsewhere (`imports`), background checks (`checks`) and the Celery tasks
(`tasks`, a leaf: domain modules enqueue through `enqueue`). It may import `evalsite`'s shared
pieces (`evalsite.fields`, `evalsite.roles`); it must never import `scoring`, which judges runs
and depends on this app, not the reverse.
"""
