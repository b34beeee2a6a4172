"""``notify-gateway`` subcommands for producers and for debugging: publish, session, listen."""
