"""Cluster mode: the Redis bus between nodes, cross-node delivery, node leases."""

__all__ = ["bus", "delivery", "lifecycle", "messages"]
