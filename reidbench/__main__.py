"""`python -m reidbench` (also what `torchrun ... -m reidbench` runs)."""

from reidbench.cli.app import main

if __name__ == "__main__":
    main()
