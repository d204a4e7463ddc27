"""Kafka and Cassandra: connection settings, client helpers, and the local servers.

- ``infra.settings.InfraSettings``: every knob, from ``VISTA_*`` environment variables.
- ``infra.kafka``: ``make_producer`` / ``make_consumer`` / ``make_admin`` (kafka-python),
  ``client_config``, ``ensure_topics``.
- ``infra.cassandra``: ``connect`` (driver session), ``apply_schema`` (``infra/cql/*.cql``).
- ``infra.local``: ``up`` / ``down`` / ``status`` / ``reset`` / ``init_schema_and_topics``
  for the single-node Kafka (KRaft) and Cassandra 5 run from jars fetched by ``infra/pom.xml``.
- ``infra.secured`` (+ ``infra.certs``): the secured profile of those servers (SASL_SSL/SCRAM Kafka,
  Cassandra auth + client TLS, a locally generated CA) and the login its clients use.

Submodules are imported on use; importing ``infra`` itself is free.
"""
