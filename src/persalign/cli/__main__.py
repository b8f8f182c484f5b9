from persalign.cli import main

main()
