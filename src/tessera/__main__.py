"""``python -m tessera``: the ``tessera`` command; ``tessera serve`` starts its services so."""

from tessera.cli import main

if __name__ == "__main__":
    main()
