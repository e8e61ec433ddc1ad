"""The `sotadb` command line: one module per command group, output in one place."""
