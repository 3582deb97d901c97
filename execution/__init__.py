"""The executor's parts: market rules, risk, positions, the broker contract, paper trading."""
