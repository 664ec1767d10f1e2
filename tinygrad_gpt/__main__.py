import sys

try:
    from .commands.cli import main
except KeyboardInterrupt:  # Ctrl-C while the commands are still being imported
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
