"""Tickets across a connection: replicas, rules, the engine, links, errors, history."""
