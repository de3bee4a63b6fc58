"""The `reidbench` command line: thin Typer commands over library functions."""
