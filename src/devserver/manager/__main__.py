"""`python -m devserver.manager`: the operator, whose command line is devserver.operator's."""

from devserver.operator import main

main()
