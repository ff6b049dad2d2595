"""``python -m ctxir`` = the ``ctxir`` command."""

from ctxir.cli import main

main()
