"""Admin API pieces that need no server: the TokenReview cache and permission sentences."""

from __future__ import annotations

from vsphere_kale.health.adminapi import (
    Caller,
    TokenCache,
    reconcile_permission,
    status_permission,
)


class FakeClock:
    """A settable monotonic clock (time is an input here, not a collaborator)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_hit_until_ttl_then_miss() -> None:
    clock = FakeClock()
    cache = TokenCache(ttl=10, size=4, clock=clock)
    cache.put("secret-token", Caller("alice@example.com"))

    clock.now += 9.9
    assert cache.get("secret-token") == Caller("alice@example.com")
    clock.now += 0.2
    assert cache.get("secret-token") is None
    assert len(cache) == 0


def test_cache_is_keyed_by_hash_not_token() -> None:
    cache = TokenCache()
    cache.put("secret-token", Caller("alice@example.com"))

    assert "secret-token" not in repr(cache._entries)
    assert TokenCache.key("secret-token") in cache._entries
    assert cache.get("other-token") is None


def test_cache_is_bounded_oldest_out() -> None:
    cache = TokenCache(size=3)
    for i in range(5):
        cache.put(f"t{i}", Caller(f"u{i}"))

    assert len(cache) == 3
    assert cache.get("t0") is None and cache.get("t1") is None
    assert cache.get("t4") == Caller("u4")


def test_permission_sentences() -> None:
    assert status_permission("alice").describe() == (
        "list persistentvolumeclaims in namespace alice"
    )
    assert reconcile_permission("bob").describe() == (
        "create reconciles.vsphere-kale.io in namespace bob"
    )
    assert reconcile_permission().describe() == "create reconciles.vsphere-kale.io cluster-wide"
