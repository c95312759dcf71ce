// Small behaviours htmx cannot do. Loaded with a CSP nonce; no inline handlers anywhere.
