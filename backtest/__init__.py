"""Know before you risk money: vet a wallet before copying it, and report what a run found.

| module | owns |
|---|---|
| `metrics` | equity curve, drawdown, hit rate, hold times: pure functions over `Decimal` |
| `vet` | `vet WALLET`: fetch a wallet's history, replay it as the leader and as a copier, judge |
| `report` | the self-contained HTML report and the same figures as JSON |
| `cli` | the `vet` sub-command: arguments, exit codes, one clear line on errors |
"""
