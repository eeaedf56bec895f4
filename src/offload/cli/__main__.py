"""``python -m offload.cli``: the same as the ``offload`` console script."""

from offload.cli import main

main()
