"""channels' InMemoryChannelLayer, as the broadcast reads it: who is in a group.

The in-memory layer is the whole layer of a single process: a group with no channel in it here
has nobody anywhere. Its ``group_send`` first scans every channel and group of the process for
expired entries (``_clean_expired``), then sends to nobody; a run announces each of its state
changes and event batches, listened to or not, so at a thousand short tasks a second that scan
was most of what announcing cost. ``probe()`` checks that the layer still keeps its groups so.
"""

from __future__ import annotations

from typing import Any

from channels.layers import InMemoryChannelLayer


def nobody_in(layer: Any, group: str) -> bool:
    """Is ``layer`` channels' in-memory layer, with no channel in ``group``?"""
    if type(layer) is not InMemoryChannelLayer:
        return False
    groups = getattr(layer, "groups", None)
    return isinstance(groups, dict) and not groups.get(group)


def probe() -> list[str]:
    """What the installed InMemoryChannelLayer lacks of what ``nobody_in`` reads ([]: all)."""
    layer = InMemoryChannelLayer()
    if not isinstance(getattr(layer, "groups", None), dict):
        return ["channels.layers.InMemoryChannelLayer.groups is no longer a dict of groups"]
    return []
