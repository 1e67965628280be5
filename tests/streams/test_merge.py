"""Event-time merge across co-partitioned topics (a controllable clock, no broker)."""

from __future__ import annotations

from streams.merge import EventTimeMerger, Released

TOPICS = ["profiles", "interactions", "transactions"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def merger(max_idle: float = 0.05) -> tuple[EventTimeMerger[str], Clock]:
    clock = Clock()
    return EventTimeMerger(TOPICS, max_idle, clock), clock


def items(released: list[Released[str]]) -> list[str]:
    return [r.item for r in released]


def test_records_of_all_topics_come_out_in_event_time_order() -> None:
    m, _ = merger()
    m.add("transactions", 0, 10.0, "t10")
    m.add("transactions", 0, 30.0, "t30")
    m.add("profiles", 0, 20.0, "p20")
    m.add("interactions", 0, 5.0, "i5")
    m.add("interactions", 0, 40.0, "i40")
    m.add("profiles", 0, 50.0, "p50")
    # Each topic still has a record behind what is released: strict order, no waiting.
    assert items(m.ready()) == ["i5", "t10", "p20", "t30"]
    assert len(m) == 2


def test_an_empty_topic_holds_records_back_until_max_idle() -> None:
    m, clock = merger(max_idle=0.05)
    m.add("transactions", 0, 10.0, "t10")
    m.add("interactions", 0, 11.0, "i11")
    assert m.ready() == []  # profiles may still bring something older
    clock.now = 0.049
    assert m.ready() == []
    clock.now = 0.05
    assert items(m.ready()) == ["t10", "i11"]


def test_a_caught_up_topic_does_not_hold_anything_back() -> None:
    m, _ = merger()
    m.add("transactions", 0, 10.0, "t10")
    assert items(m.ready(lambda topic, partition, since: topic != "transactions")) == ["t10"]


def test_partitions_are_independent() -> None:
    m, _ = merger()
    for topic in TOPICS:
        m.add(topic, 1, 1.0, f"{topic}-1")
    m.add("transactions", 0, 0.5, "t0")
    released = m.ready()
    assert {r.partition for r in released} == {1}
    assert items(released) == ["profiles-1"]  # the tie goes to profiles, then waits again


def test_ties_go_to_profiles_first_then_interactions() -> None:
    m, _ = merger()
    m.add("transactions", 0, 1.0, "t")
    m.add("interactions", 0, 1.0, "i")
    m.add("profiles", 0, 1.0, "p")
    assert items(m.drain()) == ["p", "i", "t"]


def test_a_record_later_than_the_bound_is_processed_and_marked_late() -> None:
    m, clock = merger(max_idle=0.05)
    m.add("transactions", 0, 100.0, "t100")
    clock.now = 1.0
    assert items(m.ready()) == ["t100"]
    m.add("profiles", 0, 90.0, "p90")  # event time before what already went
    m.add("interactions", 0, 95.0, "i95")
    m.add("transactions", 0, 120.0, "t120")
    assert [(r.item, r.late) for r in m.ready()] == [("p90", True)]
    clock.now = 1.05  # profiles is empty again: the rest goes once it has waited max_idle
    assert [(r.item, r.late) for r in m.ready()] == [("i95", True), ("t120", False)]


def test_forget_returns_the_unprocessed_records_of_revoked_partitions() -> None:
    m, _ = merger()
    m.add("transactions", 0, 1.0, "a")
    m.add("transactions", 3, 1.0, "b")
    dropped = m.forget({3})
    assert items(dropped) == ["b"] and len(m) == 1


def test_a_topic_known_to_have_unread_records_is_waited_for_longer() -> None:
    clock = Clock()
    m: EventTimeMerger[str] = EventTimeMerger(TOPICS, 0.05, clock, max_lag_wait=2.0)
    m.add("transactions", 0, 10.0, "t10")

    def lagging(topic: str, partition: int, since: float) -> bool:
        return topic != "profiles"

    clock.now = 1.0
    assert m.ready(lagging) == []  # profiles has records on their way: keep waiting
    clock.now = 2.0
    assert items(m.ready(lagging)) == ["t10"]  # the bound is reached: go anyway


def test_a_record_without_event_time_goes_first_and_holds_nothing_back() -> None:
    m, _ = merger()
    m.add("transactions", 0, float("-inf"), "garbage")
    m.add("transactions", 0, 10.0, "t10")
    m.add("profiles", 0, 20.0, "p20")
    m.add("interactions", 0, 30.0, "i30")
    released = m.ready()
    assert [(r.item, r.late) for r in released] == [("garbage", False), ("t10", False)]
