"""Native fronts: the memcached text protocol and RESP2 on their own ports, routed with the
same ring, epochs, hash tags and failover TTL cap as the KV API.

`front.py` and `upstream.py` are the shared core: client connections with limits, ordered
replies and metrics; pipelined backend connections with pluggable reply framing.
"""
