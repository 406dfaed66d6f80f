"""Reports in: validation against the city, the outbox, filing onto the `reports` topic."""
