"""The files people give Mergeable and get back from it: the formats of FORMATS.md.

`prompt_sets` reads and writes prompt-set files, `contestants` contestants files. Both go
through `strict` (YAML without anchors, strict types, unknown keys, every problem reported at
once as ``FILE: ENTRY: FIELD: message``), `report` (what an import did) and `export` (YAML as
FORMATS.md writes it). What a value may be is never decided here: that is the models' `clean()`,
shared with the forms.
"""
