"""The process's coordinator: ``from streamapp.coordinator import coordinator`` (DESIGN §2)."""

from .runner.coordinator import Coordinator, coordinator

__all__ = ["Coordinator", "coordinator"]
