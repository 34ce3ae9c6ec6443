"""Which previous owners a processor fences when it is given partitions (identity.to_fence)."""

from __future__ import annotations

from processor._engine.identity import to_fence


def test_a_departed_owner_is_fenced_once_whatever_number_of_partitions_it_committed() -> None:
    assert to_fence(["wf.processor.dead", "wf.processor.dead", "wf.processor.me"], "wf.processor.me",
                    ["wf.processor.me"]) == ["wf.processor.dead"]


def test_a_live_member_that_handed_partitions_over_is_not_fenced() -> None:
    assert to_fence(["wf.processor.other"], "wf.processor.me", ["wf.processor.me", "wf.processor.other"]) == []


def test_our_own_commits_and_offsets_committed_without_an_id_fence_nobody() -> None:
    """A restart on the same state dir finds its own id; offsets from before ids were recorded have none."""
    assert to_fence(["wf.processor.me", ""], "wf.processor.me", []) == []
