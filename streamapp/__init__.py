"""streamapp: long-running Django tasks that stream live progress over WebSockets."""

__version__ = "0.1.0"
