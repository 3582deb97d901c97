"""The CLOB market websocket feed: shards, keepalive, stall detection, parsing, book upkeep.

`feed` orchestrates (what to watch, shards, books, resyncs, health), `connection` keeps each
shard's socket alive, `parsing` turns frames into typed events, `rest` fetches `/book`
snapshots for resyncs.
"""

from venue.market_feed.connection import FEED, Shard
from venue.market_feed.feed import FrameTap, MarketFeed
from venue.market_feed.rest import BookFetcher, ClobBookFetcher

__all__ = ["FEED", "BookFetcher", "ClobBookFetcher", "FrameTap", "MarketFeed", "Shard"]
