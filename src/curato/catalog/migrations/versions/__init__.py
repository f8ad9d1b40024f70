"""One module per catalog schema revision: 0001 = schema 1, 0002 = schema 2."""
