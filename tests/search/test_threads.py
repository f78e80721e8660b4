"""The search team size follows the machine's free cores over the last second only."""

import pytest

from colbert_engine.search import threads


@pytest.fixture
def readings(monkeypatch):
    """Feed search_threads fake free-core readings; returns the list to fill."""
    values = []
    monkeypatch.setattr(threads, "_free_cores", lambda: values.pop(0))
    monkeypatch.setattr(threads, "_samples", type(threads._samples)())
    return values


def test_busy_reading_shrinks_the_team_at_once(readings):
    readings += [2, 1]
    assert threads.search_threads(2, now=0.0) == 2
    assert threads.search_threads(2, now=0.3) == 1


def test_team_grows_back_within_the_window(readings):
    readings += [1, 2, 2, 2, 2, 2]
    assert threads.search_threads(2, now=0.0) == 1
    assert threads.search_threads(2, now=0.5) == 1   # the busy reading is still in the window
    assert threads.search_threads(2, now=1.2) == 2   # forgotten after WINDOW_S


def test_a_search_after_a_pause_ignores_old_busy_readings(readings):
    # many busy readings, then nothing for a while: the next call sees only its own reading
    readings += [1, 1, 1, 1, 2]
    for i in range(4):
        threads.search_threads(2, now=i * 0.25)
    assert threads.search_threads(2, now=10.0) == 2


def test_no_reading_more_often_than_sample_s(readings):
    readings += [2]
    assert threads.search_threads(2, now=0.0) == 2
    assert threads.search_threads(2, now=0.1) == 2   # no second reading (readings would be empty)
    assert threads.search_threads(1, now=0.1) == 1   # never more than allowed


def test_unknown_machine_keeps_the_callers_threads(monkeypatch):
    monkeypatch.setattr(threads, "_free_cores", lambda: None)
    monkeypatch.setattr(threads, "_samples", type(threads._samples)())
    assert threads.search_threads(3, now=0.0) == 3


def test_one_busy_reading_among_quiet_ones_is_ignored(readings):
    # a kernel thread caught runnable once must not put a quiet machine's searches on one thread
    readings += [2, 2, 1, 2]
    assert [threads.search_threads(2, now=t) for t in (0.0, 0.25, 0.5, 0.75)] == [2, 2, 2, 2]


def test_a_competitor_that_stays_is_seen(readings):
    readings += [2, 1, 1, 1]
    assert [threads.search_threads(2, now=t) for t in (0.0, 0.25, 0.5, 0.75)] == [2, 1, 1, 1]


def test_runnable_threads_that_use_no_cpu_do_not_count():
    # 2 CPUs, 100 ticks: others used 4 ticks (0.08 cores) while one thread read as runnable
    assert threads._other_cores(1, (30, 100, 26), 2) == 0
    # a competitor on a whole core: 50 ticks of others' time
    assert threads._other_cores(1, (80, 100, 30), 2) == 1
    # never more than the runnable count, and no history: the count alone
    assert threads._other_cores(0, (100, 100, 0), 2) == 0
    assert threads._other_cores(2, None, 2) == 2
