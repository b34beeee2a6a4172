"""The ``notify-gateway`` command line, above the server and the publisher library: one module
per subcommand (serve and its workers, doctor, publish, session, listen), :mod:`main` builds
the parser."""
