"""Which loaded model the scorer serves: the promoted version (stream/versions.py), or one pinned at start.

A scorer loads one engine per checkpoint it is given. Unpinned, it serves the promoted version and follows
a new promotion within its poll interval, so `vista versions promote` switches every scorer without a
restart; a batch is scored by one engine, and its responses name that engine's version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from stream.scorer.config import ScorerConfig
from stream.scorer.engine import ScoringEngine, UnknownModelError

log = logging.getLogger("vista.scorer")


@dataclass
class ServedModels:
    """The engines by model_version, and the one serving now."""

    engines: dict[str, ScoringEngine]
    serving: str
    pinned: bool = False
    missing_promoted: str | None = field(default=None)
    """A promoted version this scorer has no checkpoint of (it keeps serving `serving` and says so)."""

    @classmethod
    def single(cls, engine: ScoringEngine) -> ServedModels:
        """One engine, pinned (tests, and a scorer given one checkpoint and a --model-version)."""
        return cls({engine.model_version: engine}, engine.model_version, pinned=True)

    @classmethod
    def choose(cls, engines: list[ScoringEngine], *, pinned: str | None, promoted: str | None) -> ServedModels:
        """At start: the pinned version, else the promoted one, else (nothing promoted yet) the first engine.
        A promoted version without a checkpoint here is refused: this scorer would serve another one."""
        by_version = {e.model_version: e for e in engines}
        loaded = ", ".join(by_version)
        if pinned is not None:
            if pinned not in by_version:
                raise UnknownModelError(f"--model-version {pinned} is not among the checkpoints given ({loaded})")
            return cls(by_version, pinned, pinned=True)
        if promoted is None:
            log.warning("no model version is promoted yet: serving %s (the first checkpoint)", engines[0].model_version,
                        extra={"event": "version_unpromoted", "model_version": engines[0].model_version})
            return cls(by_version, engines[0].model_version)
        if promoted not in by_version:
            raise UnknownModelError(f"the promoted model_version {promoted} is not among the checkpoints given "
                                    f"({loaded}): pass its checkpoint, or pin one with --model-version")
        return cls(by_version, promoted)

    @property
    def current(self) -> ScoringEngine:
        return self.engines[self.serving]

    @property
    def config(self) -> ScorerConfig:
        """The engines' shared config (they differ only in the checkpoint)."""
        return self.current.config

    def follow(self, promoted: str | None) -> bool:
        """Serve `promoted` if this scorer has it; returns whether the served version changed."""
        if self.pinned or promoted is None:
            return False
        if promoted == self.serving:
            self.missing_promoted = None
            return False
        if promoted not in self.engines:
            if self.missing_promoted != promoted:
                log.error("model_version %s was promoted but this scorer has no checkpoint of it: still serving %s",
                          promoted, self.serving, extra={"event": "version_missing", "promoted": promoted,
                                                         "model_version": self.serving})
            self.missing_promoted = promoted
            return False
        log.info("serving model_version %s (promoted; was %s)", promoted, self.serving,
                 extra={"event": "version_switched", "model_version": promoted, "before": self.serving})
        self.serving, self.missing_promoted = promoted, None
        return True
