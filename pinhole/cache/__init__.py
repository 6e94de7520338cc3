"""HotCache adapters: ``memory`` (a per-process LRU bounded by bytes, also the edge
server's L1 tier) and ``redis`` (the shared L2 tier). Both are lossy by design:
a miss or a ``CacheUnavailable`` sends the caller to storage, never to a 5xx.
"""
