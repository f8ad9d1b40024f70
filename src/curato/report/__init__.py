"""Reports: self-contained HTML and JSON."""
