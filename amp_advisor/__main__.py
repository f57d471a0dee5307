"""`python -m amp_advisor` runs the same command line as the `amp-advisor` script."""

from .cli import main

main()
