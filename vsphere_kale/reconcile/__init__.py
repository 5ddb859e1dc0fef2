"""The pod-security reconciler: informers, keyed queue, plan-and-apply, leader election, Events."""
