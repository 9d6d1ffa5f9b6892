"""Tests that start processes: daphne, workers, Redis, a browser."""
