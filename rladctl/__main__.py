from rladctl.cli import main

main()
