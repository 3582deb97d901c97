"""Strategies: the sniper (live order books) and the copy trader (followed wallets)."""
