"""``python -m doll_core.cli``: the ``doll`` command (also what ``torchrun -m`` runs)."""

from doll_core.cli.app import main

main()
