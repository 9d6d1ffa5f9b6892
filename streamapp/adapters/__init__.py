"""Every use of another library's private internals, each behind one small adapter.

Each adapter says at start-up whether what it needs is there (``probe()``), so a library upgrade
that removes it turns a feature off loudly (a system check warning, streamapp.checks), never
silently. Nothing else in streamapp reaches into another library's private names.
"""
