"""The ``search:`` key of a merge group: an Optuna search over continuous parameters instead of a grid.

    merges:
      ties_tpe:
        method: ties
        grid: {lambda: 1.0}                 # scalars stay fixed
        search:
          space: {density: [0.1, 0.9], lambda: {low: 0.5, high: 2.0, log: true}}
          weights: [0.0, 1.0]               # one weight per ingredient, searched too (optional)
          trials: 16                        # budget: finished trials of this search, over every worker
          sampler: tpe                      # seeded TPE (default) or random
          seed: 0
          storage: null                     # null = sqlite:///OUT/search/optuna.db; any Optuna RDB URL, or
                                            # journal:PATH (Optuna's JournalStorage on a file)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SearchRange(BaseModel):
    """A continuous range; ``[low, high]`` in YAML is read as ``{low, high}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale (low must be > 0)")

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"a range is [low, high], got {list(value)}")
            return {"low": value[0], "high": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log range needs low > 0, got {self.low}")
        return self


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    space: dict[str, SearchRange] = Field(default_factory=dict, description="method parameter -> range")
    weights: SearchRange | None = Field(None, description="range of each ingredient's weight; None = not searched")
    trials: int = Field(gt=0, description="budget: finished trials of this search over all workers")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, description="sampler seed (a resumed search or an extra worker derives its own from it)")
    storage: str | None = Field(
        None, description="null = sqlite:///<output>/search/optuna.db; an Optuna RDB URL; or journal:PATH"
    )  # fmt: skip

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("journal:") or "://" in value):
            raise ValueError(f"storage {value!r}: give an Optuna RDB URL (sqlite:///FILE, postgresql://...) "
                             "or journal:PATH")  # fmt: skip
        return value

    @model_validator(mode="after")
    def _something(self) -> SearchSpec:
        if not self.space and self.weights is None:
            raise ValueError("search: give a 'space' (parameter -> [low, high]) and/or 'weights'")
        return self
