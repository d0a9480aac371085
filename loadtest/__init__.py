"""The load-test kit: Locust users that behave like this server\x27s clients (docs/loadtest.md)."""
