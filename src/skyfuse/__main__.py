"""``python -m skyfuse`` runs the command line (also what DDP worker processes re-run)."""

from skyfuse.cli import main

if __name__ == "__main__":
    main()
