"""The ``rater`` command line: argument parsing and one-line errors, no rules of its own.

``rater.cli.main`` holds the commands without Kafka (``rate``, ``rates check``) and the
entry point; ``rater.cli.kafka`` registers the Kafka commands (``worker``, ``notify``,
``produce``, ``simulate``, ``dev-broker``) and imports their packages lazily, so
``rater rate`` never imports faust.

May import: every ``rater`` package, lazily for those needing Kafka.
"""
