"""Admin API handlers (CreateTopics, DeleteTopics, configs, ...): the cluster's own APIs."""
