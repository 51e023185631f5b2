"""Hydra plugin of occaist: its config tree's typed schemas, registered before any composition."""
