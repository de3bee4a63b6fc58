"""Papers as data: tables, rows and reported values; planning, reproduction and ablations."""
