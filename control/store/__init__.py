"""The endpoint store: accounts and their webhook endpoints, with secrets encrypted at rest.

``endpoints.EndpointStore`` is the repository; ``migrator.migrate`` creates or
upgrades the schema.
"""
