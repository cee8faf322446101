"""Which fine-tuning tasks train and how many examples each gets: the ``tasks`` of a TrainConfig.

A task's ``weight`` is its examples per epoch relative to next-item (``round(weight * N)``,
``N`` the next-item training examples); next-item alone trains by default. The tasks
themselves are built in ``training.tasks``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NEXT_ITEM = "next_item"
SID_TO_TITLE = "sid_to_title"
TITLE_TO_SID = "title_to_sid"
SOURCE_RECON = "source_recon"
PREFIX_RECON = "prefix_recon"
MASKED_ITEM = "masked_item"
BPR = "bpr"
NEGATIVE = "negative"
TASKS = (NEXT_ITEM, SID_TO_TITLE, TITLE_TO_SID, SOURCE_RECON, PREFIX_RECON, MASKED_ITEM, BPR, NEGATIVE)


class TaskSpec(BaseModel):
    """One task of the mixture: on/off and examples per epoch relative to next-item."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="the task trains")
    weight: float = Field(
        default=1.0, ge=0.0, le=100.0, description="examples per epoch relative to next-item"
    )


def _spec(enabled: bool = False, weight: float = 1.0) -> TaskSpec:
    return TaskSpec(enabled=enabled, weight=weight)


class TaskMixture(BaseModel):
    """Which tasks train and how many examples each gets; default: next-item only."""

    model_config = ConfigDict(extra="forbid")

    next_item: TaskSpec = Field(
        default_factory=lambda: _spec(True), description="history -> the next item's ID (the served task)"
    )
    sid_to_title: TaskSpec = Field(default_factory=_spec, description="an item's ID -> its title")
    title_to_sid: TaskSpec = Field(default_factory=_spec, description="an item's title or text -> its ID")
    source_recon: TaskSpec = Field(
        default_factory=_spec, description="dual-source IDs: one source's codes -> the other's"
    )
    prefix_recon: TaskSpec = Field(
        default_factory=_spec, description="title + the first codes of the ID -> the remaining codes"
    )
    masked_item: TaskSpec = Field(
        default_factory=_spec, description="a history with one item masked -> the masked item's ID"
    )
    bpr: TaskSpec = Field(
        default_factory=_spec, description="history + the next item and a negative -> the preferred one"
    )
    negative: TaskSpec = Field(
        default_factory=_spec, description="history + a candidate (next item or negative) -> yes/no"
    )

    def spec(self, task: str) -> TaskSpec:
        return getattr(self, task)

    def active(self) -> list[str]:
        return [t for t in TASKS if self.spec(t).enabled and self.spec(t).weight > 0]
