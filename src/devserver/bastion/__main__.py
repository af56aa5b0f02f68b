"""`python -m devserver.bastion`."""

from devserver.bastion.app import main

main()
