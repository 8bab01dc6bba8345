"""`python -m cmdimage_watch`: the same command line as the `cmdimage-watch` script."""

from cmdimage_watch.cli import main

if __name__ == "__main__":
    main()
