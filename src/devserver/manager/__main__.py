from devserver.manager import main

main()
