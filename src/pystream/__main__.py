from pystream.cli.main import main

main()
