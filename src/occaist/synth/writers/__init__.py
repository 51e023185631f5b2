"""Writers of the synthetic world, one per real dataset layout."""
