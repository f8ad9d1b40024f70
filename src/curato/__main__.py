from curato.cli import app

app()
