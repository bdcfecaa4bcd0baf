"""Screens of the Tavern app."""
