"""`python -m bot`: the same as the `migrabot` command."""

from bot.cli import main

raise SystemExit(main())
