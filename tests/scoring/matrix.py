MATRIX: dict[str, str] = {}
