"""The prefix strategy's index shared across router replicas (route/strategies.py's Prefix, store.py's journal).

Each router routes from its own copy of the index: nothing on a request's path touches Redis. Once a sync pass
(sync.py, every SYNC_INTERVAL) each router appends what it learned since the last pass (a backend now holding
prefixes it was not known to hold) to one Redis stream and reads what the others appended, into its own copy. So a
router's copy lags the others' routing by at most two passes (about 1 s: the writer's pass, then the reader's); a
prompt sent to another router within that time may be routed without the match, as by a router of its own. A router
that starts (or finds Redis back after an outage) reads the journal's latest records; Redis keeps the last
PREFIX_LOG_MAX. Redis down: each router goes on with its own index; what it learned meanwhile is shared once Redis
answers (up to strategies.JOURNAL_MAX records per model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from route.shared.store import PREFIX_LOG_MAX, SharedStore
from route.strategies import Prefix, Strategy

KEY_HEX = 16  # hex digits of one prefix key (64 bits)


@dataclass
class PrefixShare:
    store: SharedStore
    strategies: Mapping[str, Strategy]  # the proxy's, one per model, made on first use (a Prefix with its journal on)
    strategy_for: Callable[[str], Strategy]  # the proxy's: makes one for a model this router has not routed yet
    cursor: str | None = None  # the last journal record read
    _unsent: list[dict[str, str]] = field(default_factory=list)  # taken from the journals, not yet in Redis

    def _drain(self) -> None:
        for model, strategy in list(self.strategies.items()):
            if not isinstance(strategy, Prefix) or strategy.journal is None:
                continue
            for backend, keys in strategy.journal:
                text = "".join(f"{k:0{KEY_HEX}x}" for k in keys)
                self._unsent.append({"r": self.store.replica, "m": model, "b": backend, "k": text})
            strategy.journal.clear()
        del self._unsent[:-PREFIX_LOG_MAX]  # Redis down for long: the oldest are only lost to the others

    async def exchange(self) -> bool:
        """One pass: send what this router learned, learn what the others sent. False: Redis did not answer."""
        self._drain()
        found = await self.store.journal(self._unsent, self.cursor)
        if found is None:
            return False
        self._unsent.clear()
        for record_id, record in found:
            self.cursor = record_id
            if record.get("r") == self.store.replica:
                continue
            strategy = self.strategy_for(record.get("m", ""))
            if isinstance(strategy, Prefix):
                text = record.get("k", "")
                try:
                    keys = [int(text[i : i + KEY_HEX], 16) for i in range(0, len(text) - KEY_HEX + 1, KEY_HEX)]
                except ValueError:
                    continue
                strategy.learn(keys, record.get("b", ""))
        return True
