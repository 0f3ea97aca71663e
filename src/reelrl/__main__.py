"""``python -m reelrl ...`` (what ``torchrun ... -m reelrl train RECIPE`` runs in every process)."""

from reelrl.cli import main

main()
