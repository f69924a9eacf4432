from clipbuild.cli import main

main()
