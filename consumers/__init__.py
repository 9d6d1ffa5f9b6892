"""The Channels side of streamapp: WebSocket consumers and their routing."""
