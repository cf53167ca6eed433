"""Cluster metadata (local file for one node; ZooKeeper for many), controller, replicas."""
