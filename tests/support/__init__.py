"""What the tests share: clients, processes, relays, databases, helpers."""
