"""Where actions, decisions and dead letters go."""
