"""Namespace health: status collection and the authenticated admin API."""
