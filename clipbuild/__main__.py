from clipbuild.cli.main import main

main()
