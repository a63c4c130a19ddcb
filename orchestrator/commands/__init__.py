"""One module per subcommand; each exposes ``run(args, io) -> exit code``."""
