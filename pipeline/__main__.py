"""``python -m pipeline`` runs the ``hintset`` command line."""

from pipeline.cli import main

main()
