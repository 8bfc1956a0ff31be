"""Health state changes: active thresholds, passive ejection with growing times, never the last one."""

from __future__ import annotations

from route.config import BackendSpec, RouterConfig
from route.health import record_check, record_failure
from route.registry import Registry

CFG = RouterConfig(unhealthy_after=2, healthy_after=3, eject_base=10, eject_max=35, health_interval=5)


def registry(*names: str, models: tuple[str, ...] = ("m",)) -> Registry:
    r = Registry()
    for n in names:
        r.register(BackendSpec(name=n, url=f"http://127.0.0.1/{n}", models=list(models)), healthy=True)
    return r


def test_active_checks_need_n_failures_and_m_passes() -> None:
    b = registry("a").backends["a"]
    record_check(b, "down", 0, CFG)
    assert b.healthy
    record_check(b, "down", 1, CFG)
    assert not b.healthy and b.last_error == "down" and b.next_check == 6
    for t in (2, 3):
        record_check(b, None, t, CFG)
        assert not b.healthy
    record_check(b, None, 4, CFG)
    assert b.healthy


def test_passive_ejection_doubles_and_is_capped() -> None:
    r = registry("a", "b")
    a = r.backends["a"]
    times = []
    for _ in range(4):
        assert record_failure(r, a, "refused", 100, CFG)
        times.append(a.ejected_until - 100)
        assert not a.healthy and a.next_check == a.ejected_until
        record_check(a, None, 99.0 + times[-1], CFG)  # a pass before the time is up does not count
        assert not a.healthy
        record_check(a, None, 100.0 + times[-1], CFG)  # one pass after it brings it back
        assert a.healthy
    assert times == [10, 20, 35, 35]
    assert a.errors == 4 and a.ejections == 4
    # healthy for eject_max after the last ejection: the next one starts from eject_base again
    record_check(a, None, a.ejected_at + 35, CFG)
    assert record_failure(r, a, "refused", 500, CFG) and a.ejected_until == 510 and a.ejections == 5


def test_the_last_healthy_backend_of_a_model_is_never_ejected() -> None:
    r = registry("a", "b")
    a, b = r.backends["a"], r.backends["b"]
    assert record_failure(r, a, "refused", 0, CFG)
    assert not record_failure(r, b, "refused", 0, CFG)
    assert b.healthy and b.errors == 1
    # a backend of two models is kept while it is the only one for either
    r.register(BackendSpec(name="c", url="http://127.0.0.1/c", models=["m", "solo"]), healthy=True)
    assert not record_failure(r, r.backends["c"], "refused", 0, CFG)


def test_draining_backends_are_not_candidates_and_leave_when_idle() -> None:
    r = registry("a", "b")
    a = r.backends["a"]
    r.acquire(a)
    r.unregister("a")
    assert [x.name for x in r.candidates("m")] == ["b"] and "a" in r.backends
    r.release(a)
    assert "a" not in r.backends and r.served == {"m"}
