"""Adapters for the ``JobQueue`` port.

``memory`` keeps the embedded single-process default dependency-free;
``kafka`` is what scales out, through consumer groups over partitions keyed by
image id. Both give the same at-least-once contract: a group's position only
moves past messages that were all acked, so a crash or a close redelivers
whatever was still in hand. Services depend on the port, not on these modules.
"""
