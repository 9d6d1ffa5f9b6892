"""The process's coordinator: ``from streamapp.coordinator import coordinator``."""

from .runner import Coordinator, coordinator

__all__ = ["Coordinator", "coordinator"]
