"""Widgets of the Tavern app."""
