"""Project tools that are not part of the daemon (mutation testing)."""
