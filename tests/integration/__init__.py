"""In-process tests: consumers through WebsocketCommunicator, the runner, HTTP, commands."""
