"""`python -m coordinator.cli` (how `loa up` and the tests start the processes)."""

from coordinator.cli.main import main

main()
