"""The supervisors' back-off schedule (kubechat.core.backoff)."""

from __future__ import annotations

import pytest

from kubechat.core.backoff import Backoff


def test_delays_in_turn_then_the_last_for_ever() -> None:
    backoff = Backoff((1.0, 2.0, 5.0))
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 5.0, 5.0, 5.0]


def test_reset_starts_again_from_the_first_delay() -> None:
    backoff = Backoff((1.0, 2.0, 5.0))
    backoff.next_delay(), backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 1.0


def test_jitter_spreads_each_delay_within_its_fraction() -> None:
    backoff = Backoff((10.0,), jitter=0.2)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(8.0 <= d <= 12.0 for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize("delays, jitter", [((), 0.0), ((-1.0,), 0.0), ((1.0,), 1.0), ((1.0,), -0.1)])
def test_refuses_a_schedule_that_makes_no_sense(delays: tuple[float, ...], jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(delays, jitter=jitter)
